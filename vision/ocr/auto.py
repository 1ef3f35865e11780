"""The ``auto`` OCR engine (the default): each line read by the engine that reads it best.

RapidOCR's detector finds the lines (boxes and directions, reliable on photos and scans alike)
and cuts each one out straight. Tesseract reads every line crop first: it is fast, and reads
clean print best. A line it is sure of (every word at least ``TESSERACT_SURE`` confident) keeps
Tesseract's text; the others go to RapidOCR's recogniser (with its direction classifier, so an
upside-down line is turned), which reads photographed, blurred or noisy text far better.
RapidOCR's lines under ``RAPIDOCR_MIN_SCORE`` are dropped, as its own pipeline does (barcode
stripes, specks). Each line says which engine read it (``OcrLine.engine``).

Measured on 20 generated labels and receipts (``bench/ocr.py``): Tesseract is sure of 87 % of
the lines of the flat documents and 70 % of those of the photographed ones, and its read of a
line costs about a third of RapidOCR's. The threshold 0.9 gave the lowest character error on
both (0.56 % flat, 1.2 % photographed; 0.85: 0.68 % and 1.29 %; 0.95: 0.54 % and 1.27 %;
RapidOCR reading every line: 0.63 % and 1.23 %).

The engine holds the process's shared ``rapidocr`` and ``tesseract`` engines (its own size is
nothing) and takes their locks one step at a time. With ``threads`` of 2 or more, RapidOCR's
recogniser reads the unsure lines on a second thread while Tesseract reads the next ones (both
release the GIL), and RapidOCR's detector runs on ``threads`` ONNX Runtime threads.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from PIL import Image

from core.errors import ConfigurationError
from core.logging import log_event
from vision.ocr.engines import (
    RapidOcrEngine,
    TesseractEngine,
    _rgb,
    get_engine,
    ocr_engines,
)
from vision.ocr.results import OcrLine, OcrResult

__all__ = ["RAPIDOCR_MIN_SCORE", "TESSERACT_SURE", "AutoEngine"]

TESSERACT_SURE = 0.9
"""Tesseract's line is kept when its least confident word is at least this confident."""
RAPIDOCR_MIN_SCORE = 0.5
"""RapidOCR's lines under this confidence are dropped (its own pipeline's ``text_score``)."""
OVERLAP_CHUNK = 4
"""With two or more threads, Tesseract reads this many lines at a time and hands the unsure
ones to RapidOCR on a second thread straight away."""


@ocr_engines.register("auto")
class AutoEngine:
    """RapidOCR detection; per line Tesseract when it is sure, else RapidOCR (see the module)."""

    name: ClassVar[str] = "auto"

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigurationError(f"OCR threads={threads}: use 1 or more")
        began = time.perf_counter()
        rapid = get_engine("rapidocr", threads=threads)
        tesseract = get_engine("tesseract")
        if not isinstance(rapid, RapidOcrEngine) or not isinstance(tesseract, TesseractEngine):
            raise ConfigurationError(
                "the auto OCR engine needs the built-in rapidocr and tesseract engines"
            )
        self._rapid = rapid
        self._tesseract = tesseract
        self.threads = threads
        self._second = ThreadPoolExecutor(1, thread_name_prefix="ocr-auto") if threads > 1 else None
        log_event(
            "vision.ocr.engine_loaded",
            engine=self.name,
            threads=threads,
            seconds=round(time.perf_counter() - began, 3),
        )

    @property
    def nbytes(self) -> int:
        """Nothing of its own: the engines it uses are shared entries, counted there."""
        return 0

    def read(self, image: Image.Image) -> OcrResult:
        """The text lines of ``image``, each read by Tesseract or RapidOCR (see the module)."""
        regions = self._rapid.detect(_rgb(image))
        if not regions:
            return OcrResult.from_lines([])
        crops = [r.crop for r in regions]
        if self._second is None:
            readings = self._tesseract.read_lines(crops)
            unsure = [i for i, r in enumerate(readings) if r.lowest < TESSERACT_SURE]
            read = self._rapid.recognize([crops[i] for i in unsure])
            second = dict(zip(unsure, read, strict=True))
        else:
            # two or more threads: RapidOCR reads each unsure line while Tesseract goes on
            readings, pending = [], {}
            for start in range(0, len(crops), OVERLAP_CHUNK):
                chunk = self._tesseract.read_lines(crops[start : start + OVERLAP_CHUNK])
                for i, reading in enumerate(chunk, start):
                    if reading.lowest < TESSERACT_SURE:
                        pending[i] = self._second.submit(self._rapid.recognize, [crops[i]])
                readings.extend(chunk)
            second = {i: future.result()[0] for i, future in pending.items()}
        lines, angles = [], []
        for i, (region, reading) in enumerate(zip(regions, readings, strict=True)):
            if i in second:
                text, score = second[i]
                if score < RAPIDOCR_MIN_SCORE:
                    continue
                line = OcrLine(text, score, region.box, self._rapid.name)
            else:
                line = OcrLine(reading.text, reading.confidence, region.box, self._tesseract.name)
            lines.append(line)
            angles.append(region.angle)
        return OcrResult.from_lines(lines, angles)
