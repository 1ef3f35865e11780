"""Pre-built OCR: engines (``rapidocr``, ``tesseract``) that read text lines from images.

    from vision.ocr import get_engine
    result = get_engine("rapidocr").read(image)     # OcrResult(text, lines)
    result.lines[0].text, result.lines[0].confidence, result.lines[0].box.x_min

The built-in model ``prebuilt-ocr`` (``vision.ocr.prebuilt``) serves them to tenants.
"""

from core.backends import Box
from vision.ocr.engines import DEFAULT_ENGINE, OcrEngine, get_engine, ocr_engines
from vision.ocr.results import OcrLine, OcrResult, reading_order

__all__ = [
    "DEFAULT_ENGINE",
    "Box",
    "OcrEngine",
    "OcrLine",
    "OcrResult",
    "get_engine",
    "ocr_engines",
    "reading_order",
]
