"""Pre-built OCR: engines (``auto``, ``rapidocr``, ``tesseract``) that read text lines from
images; ``auto`` (the default) reads each line with the engine that reads it best.

    from vision.ocr import get_engine
    result = get_engine("auto").read(image)     # OcrResult(text, lines)
    result.lines[0].text, result.lines[0].confidence, result.lines[0].engine

The built-in model ``prebuilt-ocr`` (``vision.ocr.prebuilt``) serves them to tenants.
"""

from core.backends import Box
from vision.ocr.auto import AutoEngine
from vision.ocr.engines import DEFAULT_ENGINE, OcrEngine, get_engine, ocr_engines
from vision.ocr.results import OcrLine, OcrResult, reading_order

__all__ = [
    "DEFAULT_ENGINE",
    "AutoEngine",
    "Box",
    "OcrEngine",
    "OcrLine",
    "OcrResult",
    "get_engine",
    "ocr_engines",
    "reading_order",
]
