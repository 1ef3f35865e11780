"""A small bot that greets and hands off, for channel and console tests (inline NLU examples,
trained in seconds)."""

from __future__ import annotations

from typing import Any

HANDOFF_INTENTS = {
    "greet": ["hi", "hello", "hey there", "good morning", "hello bot", "hiya"],
    "talk_to_human": ["talk to a human", "get me a person", "agent please", "a real person please"],
}


def handoff_bot(name: str = "support", **greeting: Any) -> dict[str, Any]:
    """Greets with "Hello from the bot!" (plus ``greeting``'s fields, e.g. quick replies) and
    hands off on ``talk_to_human``."""
    return {
        "name": name,
        "nlu": {"intents": HANDOFF_INTENTS},
        "responses": {"utter_greet": [{"text": "Hello from the bot!", **greeting}]},
        "flows": {"greet": {"intents": ["greet"], "steps": [{"reply": "utter_greet"}]}},
        "handoff": {"intents": ["talk_to_human"]},
    }
