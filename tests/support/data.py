"""Small datasets the tests write themselves (tests never read ../shared)."""

from __future__ import annotations

import csv
import io

INTENTS: dict[str, list[str]] = {
    "track_order": [
        "where is my order",
        "track my package please",
        "has my parcel shipped yet",
        "when will my order arrive",
        "what's the status of order 4821",
        "my delivery hasn't come",
        "can you tell me where my shipment is",
        "is my package out for delivery",
    ],
    "refund": [
        "i want my money back",
        "how do i get a refund",
        "refund my purchase please",
        "can i return this for a refund",
        "i was charged but want a refund",
        "please reimburse me",
        "give me my money back for the shoes",
        "when will my refund be processed",
    ],
    "greet": [
        "hello",
        "hi there",
        "good morning",
        "hey",
        "hello, anyone there?",
        "hi!",
        "good afternoon",
        "greetings",
    ],
    "goodbye": [
        "bye",
        "goodbye",
        "see you later",
        "that's all, bye",
        "talk to you later",
        "have a nice day, bye",
        "cya",
        "farewell",
    ],
}


def intent_rows() -> list[tuple[str, str]]:
    return [(text, label) for label, texts in INTENTS.items() for text in texts]


def intent_csv(rows: list[tuple[str, str]] | None = None) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(rows if rows is not None else intent_rows())
    return out.getvalue().encode()


RASA_NLU = """version: "3.1"
nlu:
- intent: track_order
  examples: |
    - where is order [A-1932](order_id)?
    - track my [headphones](product) please
    - has order [48213](order_id) shipped
- intent: greet
  examples: |
    - hello
    - hi there
- synonym: headphones
  examples: |
    - earphones
    - headset
- regex: order_id
  examples: |
    - [A-Z]-\\d{4}
- lookup: product
  examples: |
    - headphones
    - sofa
"""
