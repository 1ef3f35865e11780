"""A small entity dataset the tests write themselves (JSONL with character spans)."""

from __future__ import annotations

import json

CITIES = ["Berlin", "Paris", "London", "Madrid", "Rome", "Vienna", "Oslo", "Dublin"]
PRODUCTS = ["headphones", "sofa", "blender", "mattress", "laptop", "kettle"]
TEMPLATES = [
    "ship my {product} to {city}",
    "can you deliver the {product} to {city} please",
    "i ordered a {product} and live in {city}",
    "is the {product} available in {city}",
    "send the {product} to my flat in {city} tomorrow",
]


def entity_rows() -> list[dict[str, object]]:
    rows = []
    for i, template in enumerate(TEMPLATES):
        for j, city in enumerate(CITIES):
            product = PRODUCTS[(i + j) % len(PRODUCTS)]
            text = template.format(product=product, city=city)
            spans = []
            for value, entity in ((product, "product"), (city, "city")):
                start = text.index(value)
                spans.append({"start": start, "end": start + len(value), "entity": entity})
            rows.append({"text": text, "entities": spans})
    return rows


def entity_jsonl() -> bytes:
    return "".join(json.dumps(r) + "\n" for r in entity_rows()).encode()
