"""The built-in model ``prebuilt-ocr``: every tenant can read the text of images without training.

``read(images, engine=..., task=...)`` returns, per image, a JSON-ready dict::

    {"text": "ACME Ltd\\nORD-2026-48213", "engine": "auto",
     "lines": [{"text": "ACME Ltd", "confidence": 0.96, "engine": "tesseract",
                "box": {"x_min": 12.0, "y_min": 8.0, "x_max": 140.0, "y_max": 31.0}}, ...]}

Boxes are in the input image's pixels (floats); lines come in reading order (see
``vision.ocr.results``); each line names the engine that read it (``auto``, the default,
chooses per line: ``vision.ocr.auto``). ``task="contact"`` adds ``"entities"``: what the
pre-built entity model (``prebuilt-entities``: email, phone_number, url, number, PERSON, ORG,
GPE, ...) finds in ``text``, with ``start``/``end`` offsets into ``text``. The entity model is
loaded on the first ``contact`` request, not before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from core.backends import BackendContext, BuiltinModel, builtin_models
from core.errors import InvalidInput
from vision.ocr.engines import DEFAULT_ENGINE, get_engine, ocr_engines

__all__ = ["PREBUILT_OCR", "TASKS", "OcrModel"]

CONTACT_ENTITIES = "prebuilt-entities"
"""The built-in entity model that ``task="contact"`` runs over the text read."""

TASKS = ("contact",)
"""What ``read`` can do beyond reading: ``contact`` finds emails, phones, names, ... in the text."""


class OcrModel:
    """The loaded ``prebuilt-ocr`` model; engines and the entity model load on first use."""

    def __init__(self, context: BackendContext) -> None:
        self.labels: list[str] = []
        self.context = context
        self.threads = context.ocr_threads
        self._entities: Any = None
        self._entities_lock = threading.Lock()

    @property
    def engines(self) -> list[str]:
        """The engine names ``read`` accepts."""
        return ocr_engines.names()

    def read(
        self,
        images: Sequence[Image.Image],
        *,
        engine: str = DEFAULT_ENGINE,
        task: str | None = None,
    ) -> list[dict[str, Any]]:
        """Per image, its text, lines (text, confidence, box) and engine; with
        ``task="contact"`` also the entities found in its text."""
        if task is not None and task not in TASKS:
            raise InvalidInput(
                f"unknown OCR task {task!r}; known: {', '.join(TASKS)} (or none, to only read)",
                known=list(TASKS),
            )
        if isinstance(images, Image.Image):
            raise TypeError("read takes a sequence of images, not one image")
        ocr = get_engine(engine, threads=self.threads)
        results = [ocr.read(image) for image in images]
        out = [{**result.to_dict(), "engine": engine} for result in results]
        if task == "contact" and results:
            found = self._entity_extractor().extract([result.text for result in results])
            for item, entities in zip(out, found, strict=True):
                item["entities"] = [entity.to_dict() for entity in entities]
        return out

    def _entity_extractor(self) -> Any:
        with self._entities_lock:
            if self._entities is None:
                # through the registry: vision does not import nlu
                self._entities = builtin_models.get(CONTACT_ENTITIES).load(self.context)
            return self._entities


def _load(context: BackendContext) -> OcrModel:
    return OcrModel(context)


PREBUILT_OCR = builtin_models.register("prebuilt-ocr")(
    BuiltinModel(
        name="prebuilt-ocr",
        task="ocr",
        backend="builtin",
        description="Text lines with confidences and boxes from images: engine='auto' (the "
        "default) reads each line with Tesseract 5 when it is sure and RapidOCR PP-OCRv6 "
        "otherwise; 'rapidocr' or 'tesseract' alone; task='contact' adds emails, phone "
        "numbers, names and the other pre-built entities; no training",
        load=_load,
    )
)
