"""A realistic Rasa-style ``nlu.yml`` the tests write themselves: intents with annotated
entities (with roles), synonyms, a regex and a lookup table."""

from __future__ import annotations

ORDER_IDS = ["A-1932", "B-2210", "C-4471", "D-9034", "E-1200", "F-3388", "G-5120", "H-7001"]
PRODUCTS = ["headphones", "sofa", "blender", "mattress", "laptop", "kettle", "earphones", "TV"]
CITIES = ["Berlin", "Paris", "Madrid", "Rome", "Vienna", "Oslo", "Dublin", "Lisbon"]

TRACK = [
    "where is order [{o}](order_id)?",
    "track order [{o}](order_id) please",
    "has [{o}](order_id) shipped yet",
    "any news on my order [{o}](order_id)",
    "status of [{o}](order_id)",
    "my order [{o}](order_id) is late, where is it",
    "can you check order [{o}](order_id) for me",
    "when does [{o}](order_id) arrive",
]
REFUND = [
    "i want a refund for the [{p}](product)",
    "refund my [{p}](product) please",
    "the [{p}](product) is broken, give me my money back",
    "how do i return the [{p}](product) for a refund",
    "money back for my [{p}](product)",
    "i'd like to return this [{p}](product)",
    "can i get a refund on the [{p}](product)",
    "please reimburse the [{p}](product)",
]
MOVE = [
    'move my delivery from [{a}]{{"entity": "city", "role": "from"}} to '
    '[{b}]{{"entity": "city", "role": "to"}}',
    'i moved from [{a}]{{"entity": "city", "role": "from"}} to '
    '[{b}]{{"entity": "city", "role": "to"}}, update my address',
    'change the address to [{b}]{{"entity": "city", "role": "to"}} please',
    'ship to [{b}]{{"entity": "city", "role": "to"}} instead of '
    '[{a}]{{"entity": "city", "role": "from"}}',
    'new address is in [{b}]{{"entity": "city", "role": "to"}}',
    'please redirect it to [{b}]{{"entity": "city", "role": "to"}}',
    'deliver to [{b}]{{"entity": "city", "role": "to"}}, not '
    '[{a}]{{"entity": "city", "role": "from"}}',
    'i live in [{b}]{{"entity": "city", "role": "to"}} now',
]
GREET = ["hello", "hi there", "good morning", "hey", "hi!", "good evening", "hello bot", "howdy"]
BYE = [
    "bye",
    "goodbye",
    "see you",
    "that's all, thanks, bye",
    "cya",
    "talk later",
    "bye bye",
    "have a good day",
]


def _block(lines: list[str]) -> str:
    return "".join(f"    - {line}\n" for line in lines)


def rasa_nlu_yml() -> str:
    track = [t.format(o=ORDER_IDS[i]) for i, t in enumerate(TRACK)]
    refund = [t.format(p=PRODUCTS[i]) for i, t in enumerate(REFUND)]
    move = [t.format(a=CITIES[i], b=CITIES[(i + 3) % 8]) for i, t in enumerate(MOVE)]
    return (
        'version: "3.1"\nnlu:\n'
        f"- intent: track_order\n  examples: |\n{_block(track)}"
        f"- intent: refund\n  examples: |\n{_block(refund)}"
        f"- intent: change_address\n  examples: |\n{_block(move)}"
        f"- intent: greet\n  examples: |\n{_block(GREET)}"
        f"- intent: goodbye\n  examples: |\n{_block(BYE)}"
        "- synonym: headphones\n  examples: |\n    - earphones\n    - headset\n"
        "- regex: order_id\n  examples: |\n    - \\b[A-Z]-\\d{4}\\b\n"
        "- lookup: product\n  examples: |\n    - headphones\n    - sofa\n    - kettle\n"
        "    - toaster\n"
    )
