"""OCR engines behind one method: ``read(image) -> OcrResult``.

``auto`` (the default, ``vision.ocr.auto``)
    RapidOCR's detector finds the lines; each is read by Tesseract when it is sure, else by
    RapidOCR's recogniser, and names its reader (``OcrLine.engine``).
``rapidocr``
    RapidOCR 3.x on ONNX Runtime with the models shipped inside the ``rapidocr`` wheel:
    PP-OCRv6 small detection and recognition, and the PP-OCR v2.0 mobile direction
    classifier. Each model is passed by path and its sha256 checked against the value RapidOCR
    itself records, so RapidOCR never looks for another variant: it downloads only when no
    ``model_path`` is given (``OrtInferSession``), when a recognition model lacks its
    character list (the bundled one embeds it), or when asked to draw results (a font; never
    done here). Other model variants (tiny, medium, PP-OCRv4/v5, other languages) are not in
    the wheel and are never selected.
``tesseract``
    Tesseract 5 through ``tesserocr``, with the English model from Debian's ``tesseract-ocr``
    package (``/usr/share/tesseract-ocr/5/tessdata/``); lines from its TEXTLINE level.

Both read small images enlarged (``RAPIDOCR_MIN_SIDE``, ``TESSERACT_MIN_SIDE``) and report
boxes in the input image's pixels, with each line's text direction passed on so that reading
order survives a photo turned by a few degrees (``vision.ocr.results``).

Each engine is built once per process and thread count (``get_engine``, an entry of
``core.shared_models`` sized by its model files) and serialises its callers on a lock:
RapidOCR keeps per-call settings on the instance and a Tesseract API holds one image at a
time. ONNX Runtime runs with ``threads`` intra-op threads (1 by default); the Tesseract in the
``tesserocr`` wheel is built without OpenMP and uses one thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image

from core.backends import Box
from core.errors import ConfigurationError, InvalidInput, ModelLoadError
from core.logging import log_event
from core.registry import Registry
from core.shared_models import SharedKey, files_nbytes, shared_models
from core.storage import sha256_file
from vision.ocr.results import OcrLine, OcrResult

__all__ = [
    "DEFAULT_ENGINE",
    "RAPIDOCR_MODELS",
    "TESSDATA_DIR",
    "OcrEngine",
    "RapidOcrEngine",
    "TesseractEngine",
    "get_engine",
    "ocr_engines",
]

DEFAULT_ENGINE = "auto"
TESSDATA_DIR = Path("/usr/share/tesseract-ocr/5/tessdata/")
TESSERACT_LANG = "eng"

RAPIDOCR_MODELS: dict[str, tuple[str, str]] = {
    # RapidOCR config section: (file in rapidocr/models/, sha256 from its default_models.yaml)
    "Det": (
        "PP-OCRv6_det_small.onnx",
        "090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
    ),
    "Cls": (
        "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
    ),
    "Rec": (
        "PP-OCRv6_rec_small.onnx",
        "6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
    ),
}
"""The model files bundled in the ``rapidocr`` 3.10 wheel, the only ones this engine loads."""

RAPIDOCR_PARAMS: dict[str, Any] = {
    "Global.log_level": "error",
    # Detection sees the image as it is, shrunk only when its long side is over 1,280 px.
    # RapidOCR's default (short side enlarged to 736 px) read 20 noisy generated labels and
    # receipts (800 x 600) at 1.50 % character error against 1.01 % for this, and slower.
    "Det.limit_type": "max",
    "Det.limit_side_len": 1280,
    # Recognition one line at a time, each at its own width (at least 96 px): RapidOCR's
    # default (6 lines a batch, padded to the widest and to at least 320 px) spent about a
    # third more time on the same lines of generated labels, for the same text.
    "Rec.rec_batch_num": 1,
    "Rec.rec_img_shape": [3, 48, 96],
}
RAPIDOCR_MIN_SIDE = 640
"""Images whose long side is shorter are enlarged to it (at most 4x) before RapidOCR reads them:
its text detector misses text only a few pixels high."""
TESSERACT_MIN_SIDE = 1200
"""Images whose long side is shorter are enlarged to it (at most 2x) before Tesseract reads
them: its recogniser wants letters 20 px or more high. Enlarging 800 x 600 photos 1.5x took
its character error on 20 noisy generated labels and receipts from 22.3 % to 12.2 %
(``bench/ocr.py``; Tesseract's results on such photos swing widely from one to the next)."""
TESSERACT_PPI = 300
"""The resolution Tesseract is told: it has no way to know a photo's, and guessing from the
96 ppi header of the bitmap ``tesserocr`` hands it lost whole pages."""


class OcrEngine(Protocol):
    """Reads the text lines of one upright image."""

    name: ClassVar[str]

    def __init__(self, *, threads: int = 1) -> None: ...

    @property
    def nbytes(self) -> int: ...

    def read(self, image: Image.Image) -> OcrResult: ...


ocr_engines: Registry[type[OcrEngine]] = Registry("OCR engine")


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"an OCR engine reads a PIL image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def _enlarged(
    image: Image.Image,
    min_side: int,
    max_factor: float,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> tuple[Image.Image, float]:
    """``image`` scaled up so its long side is ``min_side`` (at most ``max_factor`` times),
    with the factor; unchanged (factor 1) when it is long enough."""
    factor = min(max_factor, min_side / max(image.size))
    if factor <= 1.0:
        return image, 1.0
    size = (round(image.width * factor), round(image.height * factor))
    return image.resize(size, resample), factor


def _box(
    x_min: float, y_min: float, x_max: float, y_max: float, factor: float, rgb: Image.Image
) -> Box:
    """A box read on an image enlarged by ``factor``, in ``rgb``'s pixels."""
    return Box(x_min / factor, y_min / factor, x_max / factor, y_max / factor).clipped(
        rgb.width, rgb.height
    )


def _quad_box(points: np.ndarray, factor: float, rgb: Image.Image) -> Box:
    """The axis-aligned box of a quadrilateral read on an image enlarged by ``factor``."""
    x_min, y_min = points.min(axis=0)
    x_max, y_max = points.max(axis=0)
    return _box(float(x_min), float(y_min), float(x_max), float(y_max), factor, rgb)


@dataclass(frozen=True)
class TextRegion:
    """One line of text found by a detector: its box in the input image's pixels, its text
    direction in degrees, and the line cut out and straightened (RGB pixels, text left to
    right, as tall as the detector's box)."""

    box: Box
    angle: float
    crop: np.ndarray


def _rapidocr_model_paths() -> dict[str, Path]:
    """The bundled model files by config section, each checked against its sha256."""
    try:
        import rapidocr
    except ImportError as e:
        raise ConfigurationError(
            f"RapidOCR is not installed ({e}): pip install rapidocr onnxruntime"
        ) from e
    folder = Path(rapidocr.__file__).resolve().parent / "models"
    paths = {}
    for section, (filename, expected) in RAPIDOCR_MODELS.items():
        path = folder / filename
        if not path.is_file():
            raise ModelLoadError(
                f"RapidOCR's bundled model {filename} is missing from {folder}; this engine "
                "needs the rapidocr 3.10 wheel, which ships it: pip install rapidocr==3.10.0"
            )
        actual = sha256_file(path)
        if actual != expected:
            raise ModelLoadError(
                f"RapidOCR's bundled model {path} has sha256 {actual}, not {expected}; "
                "reinstall the rapidocr 3.10 wheel: pip install --force-reinstall rapidocr==3.10.0"
            )
        paths[section] = path
    return paths


@ocr_engines.register("rapidocr")
class RapidOcrEngine:
    """RapidOCR with its bundled PP-OCR models (see the module docstring)."""

    name: ClassVar[str] = "rapidocr"

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigurationError(f"OCR threads={threads}: use 1 or more")
        began = time.perf_counter()
        paths = _rapidocr_model_paths()
        from rapidocr import RapidOCR

        params: dict[str, Any] = {
            **RAPIDOCR_PARAMS,
            **{f"{section}.model_path": str(path) for section, path in paths.items()},
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
        self._ocr = RapidOCR(params=params)
        self._model_paths = list(paths.values())
        self._lock = threading.Lock()
        self.threads = threads
        log_event(
            "vision.ocr.engine_loaded",
            engine=self.name,
            models=[filename for filename, _ in RAPIDOCR_MODELS.values()],
            threads=threads,
            seconds=round(time.perf_counter() - began, 3),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of its ONNX models (what their sessions hold, about)."""
        return files_nbytes(self._model_paths)

    def read(self, image: Image.Image) -> OcrResult:
        """The text lines of ``image``; none for an image without text."""
        rgb = _rgb(image)
        scaled, factor = _enlarged(rgb, RAPIDOCR_MIN_SIDE, 4.0)
        bgr = np.ascontiguousarray(np.asarray(scaled)[:, :, ::-1])
        # RapidOCR's result type is a union of its pipeline stages' outputs
        output = self._run(bgr, rgb, use_det=True, use_cls=True, use_rec=True)
        boxes, texts, scores = output.boxes, output.txts, output.scores
        if boxes is None or texts is None or scores is None:
            return OcrResult.from_lines([])
        lines, angles = [], []
        for quad, text, score in zip(boxes, texts, scores, strict=True):
            points = np.asarray(quad, dtype=float).reshape(-1, 2)
            angles.append(_quad_angle(points))
            box = _quad_box(points, factor, rgb)
            lines.append(OcrLine(str(text).strip(), _unit(score), box, self.name))
        return OcrResult.from_lines(lines, angles)

    def _run(self, bgr: np.ndarray, rgb: Image.Image, **steps: bool) -> Any:
        """RapidOCR's pipeline on a whole image (``steps``: use_det, use_cls, use_rec)."""
        from rapidocr.utils.process_img import ResizeImgError

        try:
            with self._lock:
                return self._ocr(bgr, **steps)
        except ResizeImgError as e:
            # it shrinks the long side to 2,000 px and rounds both sides to multiples of 32
            raise InvalidInput(
                f"RapidOCR cannot read a {rgb.width} x {rgb.height} px image: shrunk to its "
                "2,000 px limit, its short side would vanish. Crop or pad it to at most 100 "
                "times as long as it is high, or read it with engine='tesseract'"
            ) from e

    def detect(self, image: Image.Image) -> list[TextRegion]:
        """Where ``image`` has text: one region per line RapidOCR's detector finds, each with
        its box, direction and the line cut out straight (``crop``), in reading order of
        the detector (top to bottom)."""
        rgb = _rgb(image)
        scaled, factor = _enlarged(rgb, RAPIDOCR_MIN_SIDE, 4.0)
        bgr = np.ascontiguousarray(np.asarray(scaled)[:, :, ::-1])
        output = self._run(bgr, rgb, use_det=True, use_cls=False, use_rec=False)
        if output.boxes is None:
            return []
        from rapidocr.utils.process_img import get_rotate_crop_image

        regions = []
        for quad in output.boxes:
            points = np.asarray(quad, dtype=np.float32).reshape(-1, 2)
            crop = get_rotate_crop_image(bgr, points.copy())
            regions.append(
                TextRegion(
                    box=_quad_box(points, factor, rgb),
                    angle=_quad_angle(points.astype(float)),
                    crop=np.ascontiguousarray(crop[:, :, ::-1]),  # RGB
                )
            )
        return regions

    def recognize(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """The text and confidence of each line crop (RGB, text running left to right or
        upside down: the direction classifier turns those)."""
        if not crops:
            return []
        from rapidocr.main import RapidOCRError

        bgr = [np.ascontiguousarray(crop[:, :, ::-1]) for crop in crops]
        result: Any
        with self._lock:
            # The steps RapidOCR's pipeline runs on its own crops. Its __call__ would first
            # resize each crop as a whole image (long side at most 2,000 px, both sides rounded
            # to multiples of 32): a line longer than that reached the recogniser squashed or
            # stretched and came back garbled, and a thinner one raised ResizeImgError.
            try:
                turned, _ = self._ocr.cls_and_rotate(bgr)
                result = self._ocr.recognize_txt(turned)
            except RapidOCRError:
                return [("", 0.0)] * len(crops)
        texts, scores = result.txts, result.scores
        return [(str(t).strip(), _unit(s)) for t, s in zip(texts, scores, strict=True)]


@ocr_engines.register("tesseract")
class TesseractEngine:
    """Tesseract 5 (English) through ``tesserocr``; one API per process."""

    name: ClassVar[str] = "tesseract"

    def __init__(self, *, threads: int = 1) -> None:
        if threads < 1:
            raise ConfigurationError(f"OCR threads={threads}: use 1 or more")
        if not (TESSDATA_DIR / f"{TESSERACT_LANG}.traineddata").is_file():
            raise ConfigurationError(
                f"Tesseract's English model is missing ({TESSDATA_DIR}{TESSERACT_LANG}"
                ".traineddata): apt-get install tesseract-ocr"
            )
        try:
            import tesserocr
        except ImportError as e:
            raise ConfigurationError(
                f"tesserocr is not installed ({e}): pip install tesserocr"
            ) from e
        began = time.perf_counter()
        self._tesserocr = tesserocr
        try:
            self._api = tesserocr.PyTessBaseAPI(path=str(TESSDATA_DIR), lang=TESSERACT_LANG)
        except RuntimeError as e:
            raise ModelLoadError(
                f"Tesseract could not load {TESSERACT_LANG!r} from {TESSDATA_DIR} ({e}); "
                "reinstall it: apt-get install --reinstall tesseract-ocr"
            ) from e
        self._lock = threading.Lock()
        self.threads = 1
        log_event(
            "vision.ocr.engine_loaded",
            engine=self.name,
            version=tesserocr.tesseract_version().split()[1],
            threads=1,
            seconds=round(time.perf_counter() - began, 3),
        )

    @property
    def nbytes(self) -> int:
        """Bytes of its language model file (what the API holds, about)."""
        return files_nbytes([TESSDATA_DIR / f"{TESSERACT_LANG}.traineddata"])

    def read(self, image: Image.Image) -> OcrResult:
        """The text lines of ``image``; none for an image without text."""
        rgb = _rgb(image)
        # grey, as Tesseract reads it anyway; Lanczos: 15.2 % character error against 19.4 %
        # with bicubic on 30 noisy generated documents
        scaled, factor = _enlarged(
            rgb.convert("L"), TESSERACT_MIN_SIDE, 2.0, Image.Resampling.LANCZOS
        )
        level = self._tesserocr.RIL.TEXTLINE
        lines: list[OcrLine] = []
        angles: list[float] = []
        with self._lock:
            self._api.SetImage(scaled)
            self._api.SetSourceResolution(TESSERACT_PPI)
            self._api.Recognize()
            iterator = self._api.GetIterator()
            if iterator is not None:
                for item in self._tesserocr.iterate_level(iterator, level):
                    try:
                        text = (item.GetUTF8Text(level) or "").strip()
                    except RuntimeError:  # tesserocr's "No text returned" for an empty page
                        continue
                    bounds = item.BoundingBox(level)
                    if not text or bounds is None:
                        continue
                    x_min, y_min, x_max, y_max = (float(v) for v in bounds)
                    box = _box(x_min, y_min, x_max, y_max, factor, rgb)
                    confidence = _unit(item.Confidence(level) / 100)
                    lines.append(OcrLine(text, confidence, box, self.name))
                    angles.append(_baseline_angle(item.Baseline(level)))
            self._api.Clear()
        return OcrResult.from_lines(lines, angles)

    def read_lines(self, crops: Sequence[np.ndarray]) -> list[LineReading]:
        """Each crop (RGB, one straight line of text, as ``RapidOcrEngine.detect`` cuts
        them) read as a single line: its text, mean and lowest word confidence."""
        out: list[LineReading] = []
        with self._lock:
            self._api.SetPageSegMode(self._tesserocr.PSM.SINGLE_LINE)
            try:
                for crop in crops:
                    self._api.SetImage(_line_image(crop))
                    self._api.SetSourceResolution(TESSERACT_PPI)
                    text = " ".join((self._api.GetUTF8Text() or "").split())
                    words = [c / 100 for c in self._api.AllWordConfidences()]
                    if not text or not words:
                        out.append(LineReading("", 0.0, 0.0))
                    else:
                        mean = _unit(sum(words) / len(words))
                        out.append(LineReading(text, mean, _unit(min(words))))
            finally:
                self._api.SetPageSegMode(self._tesserocr.PSM.AUTO)
                self._api.Clear()
        return out


@dataclass(frozen=True)
class LineReading:
    """One line as Tesseract read it: its text, and the mean and lowest confidence (0..1)
    of its words."""

    text: str
    confidence: float
    lowest: float


TESSERACT_LINE_HEIGHT = 48
"""Line crops are scaled to this height (px) before Tesseract reads them."""
TESSERACT_LINE_MARGIN = 0.25
"""A margin of this share of the line height, in the crop's paper colour, is added around
each crop: Tesseract reads a line that touches the image's edge worse."""


def _line_image(crop: np.ndarray) -> Image.Image:
    """A line crop as Tesseract reads it best: grey, ``TESSERACT_LINE_HEIGHT`` high, with a
    margin of paper colour (the median of its border pixels)."""
    grey = Image.fromarray(crop).convert("L")
    factor = TESSERACT_LINE_HEIGHT / max(grey.height, 1)
    size = (max(1, round(grey.width * factor)), TESSERACT_LINE_HEIGHT)
    grey = grey.resize(size, Image.Resampling.LANCZOS)
    pixels = np.asarray(grey)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    pad = round(TESSERACT_LINE_MARGIN * TESSERACT_LINE_HEIGHT)
    framed = Image.new("L", (grey.width + 2 * pad, grey.height + 2 * pad), int(np.median(border)))
    framed.paste(grey, (pad, pad))
    return framed


def _quad_angle(points: np.ndarray) -> float:
    """The text direction of a detected quadrilateral (top-left, top-right, bottom-right,
    bottom-left), in degrees: the mean of its top and bottom edges."""
    if points.shape != (4, 2):
        return 0.0
    dx, dy = (points[1] - points[0]) + (points[2] - points[3])
    return math.degrees(math.atan2(dy, dx)) if dx or dy else 0.0


def _baseline_angle(baseline: Any) -> float:
    """The direction of a Tesseract baseline ``((x1, y1), (x2, y2))``, in degrees."""
    if not baseline:
        return 0.0
    (x1, y1), (x2, y2) = baseline
    return math.degrees(math.atan2(y2 - y1, x2 - x1)) if (x1, y1) != (x2, y2) else 0.0


def _unit(value: Any) -> float:
    return min(max(float(value), 0.0), 1.0)


def get_engine(name: str = DEFAULT_ENGINE, *, threads: int = 1) -> OcrEngine:
    """The process's shared engine ``name`` with ``threads`` (built on first use).

    One entry of ``core.shared_models`` per engine and thread count. Raises
    ``UnknownPluginError`` (an ``InvalidInput``) naming the known engines.
    """
    engine_cls = ocr_engines.get(name)
    key = SharedKey("ocr-engine", name, threads=threads)
    return shared_models.get(
        key, lambda: engine_cls(threads=threads), size=lambda engine: engine.nbytes
    )
