"""CoNLL/BIO files: one ``token<TAB>tag`` per line, a blank line between sentences."""

from __future__ import annotations

from typing import Any, ClassVar

from core.errors import ImportValidationError
from training.datasets.formats.base import RowErrors, importers
from training.datasets.types import ParsedDataset, ParsedExample


class _ConllSentence:
    """The tokens and entity spans of the sentence being read, in the example's text."""

    def __init__(self, line: int) -> None:
        self.line = line  # the first token's line: the example's line
        self.tokens: list[str] = []
        self.spans: list[dict[str, Any]] = []
        self.length = 0  # characters of " ".join(tokens)
        self.open: dict[str, Any] | None = None  # the entity the last token belongs to
        self.previous = "none"  # the previous token's tag, for messages; "" after a bad tag

    def add(self, token: str, entity: str | None, begins: bool) -> None:
        start = self.length + (1 if self.tokens else 0)
        self.tokens.append(token)
        self.length = start + len(token)
        if entity is None:
            self.open = None
        elif begins or self.open is None or self.open["entity"] != entity:
            self.open = {"start": start, "end": self.length, "entity": entity}
            self.spans.append(self.open)
        else:
            self.open["end"] = self.length

    def example(self) -> ParsedExample:
        text = " ".join(self.tokens)
        spans = [{**s, "value": text[s["start"] : s["end"]]} for s in self.spans]
        return ParsedExample(line=self.line, text=text, annotations=spans)


def _conll_tag(tag: str) -> tuple[str | None, bool] | str:
    """(entity type or None for O, whether it begins an entity), or what is wrong with ``tag``."""
    if tag == "O":
        return None, False
    prefix, dash, entity = tag.partition("-")
    if not dash or prefix not in ("B", "I"):
        hint = ""
        if tag == "0":
            hint = " (write the letter O, not the digit 0)"
        elif tag.upper() != tag and (tag.upper() == "O" or tag[:2].upper() in ("B-", "I-")):
            hint = f" (tags are case-sensitive: write {tag[:2].upper() + tag[2:]!r})"
        elif prefix.upper() in ("E", "S", "L", "U") and dash:
            hint = " (BIOES/BILOU tags are not supported; convert them to BIO)"
        return f"tag {tag!r} is not O, B-<type> or I-<type>{hint}"
    if not entity.strip():
        return f"tag {tag!r} has no entity type; write {prefix}-<type>, e.g. {prefix}-city"
    return entity, prefix == "B"


@importers.register("conll")
class ConllImporter:
    """CoNLL/BIO: one ``token<TAB>tag`` per line and a blank line between sentences.

    A single space may stand in for the tab when a line has none. Tags are BIO: ``O``,
    ``B-type`` to begin an entity, ``I-type`` to continue it. A line starting with ``#`` and
    holding no tab is a comment (so ``#hashtag<TAB>O`` stays a token). An example's text is
    its tokens joined by single spaces; each entity becomes a character span of that text.
    """

    name: ClassVar[str] = "conll"
    extensions: ClassVar[tuple[str, ...]] = (".conll", ".bio")
    dataset_types: ClassVar[tuple[str, ...]] = ("text-entities",)

    def parse(self, text: str, dataset_type: str) -> ParsedDataset:
        errors = RowErrors()
        examples: list[ParsedExample] = []
        sentence: _ConllSentence | None = None
        # split on newlines only, as for JSONL: a token may hold U+2028 and friends
        for n, raw in enumerate(text.split("\n"), start=1):
            line = raw.rstrip().lstrip(" ")  # a leading tab is an empty token
            if not line:
                if sentence is not None:
                    examples.append(sentence.example())
                sentence = None
                continue
            if line.startswith("#") and "\t" not in line:
                continue
            if sentence is None:
                sentence = _ConllSentence(n)
            fields = (
                [f.strip() for f in line.split("\t")]
                if "\t" in line
                else [f for f in line.split(" ") if f]
            )
            problem = self._read(sentence, fields)
            if problem is not None:
                errors.add(n, problem)
        if sentence is not None:
            examples.append(sentence.example())
        errors.raise_if_any("the file has bad lines")
        if not examples:
            raise ImportValidationError(
                "the file holds no examples; write one `token<TAB>tag` per line, with a blank "
                "line between sentences",
                errors=[],
            )
        return ParsedDataset(examples=examples)

    @staticmethod
    def _read(sentence: _ConllSentence, fields: list[str]) -> str | None:
        """Add one token line to ``sentence``; what is wrong with it, or None."""
        token, tag = fields[0], fields[1] if len(fields) > 1 else ""
        read = _conll_tag(tag) if tag else ""
        if len(fields) > 2:
            read = (
                f"expected `token<TAB>tag`, found {len(fields)} columns; keep only the token "
                "and its BIO tag"
            )
        elif not tag:
            read = (
                f"no tag after the token {token!r}; write `token<TAB>tag`, with O for a token "
                "outside any entity"
            )
        elif not token:
            read = f"no token before the tag {tag!r}"
        elif isinstance(read, str) and token.startswith("#"):
            read += " (a line starting with # is a comment only when it holds no tab)"
        if isinstance(read, str):
            sentence.previous = ""  # unknown: do not blame the next I- tag for this line
            return read
        entity, begins = read
        previous, sentence.previous = sentence.previous, tag
        if entity is not None and not begins and previous:  # after a bad tag, say nothing
            continuing = sentence.open is not None and sentence.open["entity"] == entity
            if not continuing:
                before = (
                    "it is the first token of the sentence"
                    if previous == "none"
                    else f"the previous tag is {previous}"
                )
                sentence.add(token, entity, begins=True)
                return (
                    f"{tag} does not continue a B-{entity} or I-{entity}: {before}; "
                    f"write B-{entity} to begin the entity"
                )
        sentence.add(token, entity, begins)
        return None
