"""Pre-built OCR: every engine reads rendered text, in reading order, with boxes where the text
is; ``auto`` reads a noisy photo and a clean scan each line with the engine that reads it best
and says which; ``prebuilt-ocr`` finds contact details; bad names are refused. Real engines,
no mocks."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import rapidocr
from PIL import Image, ImageDraw, ImageFont

from bench.documents import generate, normalize_text
from bench.scans import generate_scans
from core.backends import BackendContext, Box, builtin_models
from core.errors import ConfigurationError, InvalidInput
from core.evaluation import levenshtein
from core.shared_models import shared_models
from vision.ocr import engines
from vision.ocr.engines import get_engine
from vision.ocr.prebuilt import OcrModel  # registers prebuilt-ocr
from vision.ocr.results import OcrLine, OcrResult, reading_order

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
ENGINES = ["auto", "rapidocr", "tesseract"]

Placed = tuple[str, tuple[float, float, float, float]]  # text, its rendered box


def font(size: int = 26, bold: bool = False) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / f"DejaVuSans{'-Bold' if bold else ''}.ttf"), size)


def render(
    items: Sequence[tuple[float, float, str]], size: tuple[int, int] = (600, 200), px: int = 26
) -> tuple[Image.Image, list[Placed]]:
    """Black text on white at the given top-left corners, with each text's drawn box."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    placed = []
    for x, y, text in items:
        draw.text((x, y), text, font=font(px), fill="black")
        placed.append((text, draw.textbbox((x, y), text, font=font(px))))
    return image, placed


def norm(text: str) -> str:
    return " ".join(text.lower().split())


def cer(read: str, truth: str) -> float:
    return levenshtein(norm(read), norm(truth)) / len(norm(truth))


def positions(text: str, words: Sequence[str]) -> list[int]:
    """Where each word first appears in ``text`` (lower-cased), -1 when it does not."""
    return [norm(text).find(w.lower()) for w in words]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> engines.OcrEngine:
    return get_engine(request.param)


@pytest.fixture(scope="module")
def model() -> OcrModel:
    loaded = builtin_models.get("prebuilt-ocr").load(BackendContext(cache_dir=Path("unused")))
    assert isinstance(loaded, OcrModel)
    return loaded


# --- reading order and results (no engine) -------------------------------------------------


def line(text: str, x: float, y: float, w: float = 120, h: float = 24) -> OcrLine:
    return OcrLine(text, 0.9, Box(x, y, x + w, y + h))


def test_a_value_printed_a_little_higher_still_follows_its_label() -> None:
    lines = [
        line("Weight:", 20, 60),
        line("2.4 kg", 400, 52),  # 8 px higher than its label, same visual line
        line("Name:", 20, 20),
        line("Jane Doe", 400, 16),
        line("Order ORD-2026-48213", 20, 100, w=300),
    ]
    ordered = [item.text for item in reading_order(lines)]
    assert ordered == ["Name:", "Jane Doe", "Weight:", "2.4 kg", "Order ORD-2026-48213"]


def test_in_a_photo_turned_by_some_degrees_each_price_pairs_with_its_item() -> None:
    """Items at x=40 and prices at x=440 on rows 28 px apart, the whole page turned by 4
    degrees: each price's box sits about a row above its item's."""
    turn = math.radians(4)

    def turned(text: str, x: float, y: float, w: float) -> tuple[OcrLine, float]:
        corners = [(x, y), (x + w, y), (x + w, y + 22), (x, y + 22)]
        pts = [(cx * math.cos(turn) + cy * math.sin(turn),
                -cx * math.sin(turn) + cy * math.cos(turn) + 60) for cx, cy in corners]  # fmt: skip
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        return OcrLine(text, 0.9, Box(min(xs), min(ys), max(xs), max(ys))), -4.0

    rows = [("Coffee Beans 250g", "3.50"), ("Blueberry Muffin", "2.25"), ("TOTAL", "5.75")]
    items = [turned(name, 40, 40 + 28 * i, 200) for i, (name, _) in enumerate(rows)]
    items += [turned(price, 440, 40 + 28 * i, 60) for i, (_, price) in enumerate(rows)]
    lines, angles = zip(*items, strict=True)

    def cy(item: OcrLine) -> float:
        return (item.box.y_min + item.box.y_max) / 2

    # the second price's box is level with the first item rather than the second
    assert abs(cy(lines[4]) - cy(lines[0])) < abs(cy(lines[4]) - cy(lines[1]))
    ordered = [item.text for item in reading_order(lines, angles)]
    assert ordered == [text for row in rows for text in row]
    # without the angles the rows cannot be told apart from the boxes
    assert [item.text for item in reading_order(lines)] != ordered


def test_result_drops_empty_lines_and_joins_the_rest_with_newlines() -> None:
    result = OcrResult.from_lines(
        [line("second", 20, 60), line("  ", 20, 40), line("first", 20, 10)]
    )
    assert result.text == "first\nsecond"
    assert result.to_dict() == {
        "text": "first\nsecond",
        "lines": [
            {
                "text": "first",
                "confidence": 0.9,
                "box": {"x_min": 20.0, "y_min": 10.0, "x_max": 140.0, "y_max": 34.0},
                "engine": None,
            },
            {
                "text": "second",
                "confidence": 0.9,
                "box": {"x_min": 20.0, "y_min": 60.0, "x_max": 140.0, "y_max": 84.0},
                "engine": None,
            },
        ],
    }


# --- errors --------------------------------------------------------------------------------


def test_an_unknown_engine_is_refused_naming_the_known_ones(model: OcrModel) -> None:
    with pytest.raises(InvalidInput, match="auto, rapidocr, tesseract"):
        get_engine("easyocr")
    with pytest.raises(InvalidInput, match="auto, rapidocr, tesseract"):
        model.read([Image.new("RGB", (40, 40), "white")], engine="easyocr")


def test_an_unknown_task_is_refused_naming_the_known_ones(model: OcrModel) -> None:
    with pytest.raises(InvalidInput, match="contact"):
        model.read([Image.new("RGB", (40, 40), "white")], task="invoice")


def test_missing_tesseract_data_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engines, "TESSDATA_DIR", tmp_path)
    with pytest.raises(ConfigurationError, match="apt-get install tesseract-ocr"):
        engines.TesseractEngine()


def test_prebuilt_ocr_is_a_builtin_model_without_labels(model: OcrModel) -> None:
    builtin = builtin_models.get("prebuilt-ocr")
    assert (builtin.name, builtin.task) == ("prebuilt-ocr", "ocr")
    assert model.labels == []
    assert model.engines == ENGINES
    assert engines.DEFAULT_ENGINE == "auto"


# --- real engines --------------------------------------------------------------------------

LABEL = [
    (24, 20, "Parcel for Maria Gonzalez"),
    (24, 80, "Order ORD-2026-48213"),
    (24, 140, "Weight 2.4 kg, 1 of 2"),
]


@pytest.mark.slow
def test_engines_read_the_words_with_confidences(engine: engines.OcrEngine) -> None:
    image, placed = render(LABEL)
    result = engine.read(image)
    truth = "\n".join(text for text, _ in placed)
    assert cer(result.text, truth) <= 0.1, result.text
    assert result.text == "\n".join(item.text for item in result.lines)
    assert all(0.0 <= item.confidence <= 1.0 for item in result.lines)
    assert min(item.confidence for item in result.lines) > 0.5
    expected = {"rapidocr", "tesseract"} if engine.name == "auto" else {engine.name}
    assert {item.engine for item in result.lines} <= expected


@pytest.mark.slow
def test_boxes_lie_in_the_image_and_cover_the_drawn_text(engine: engines.OcrEngine) -> None:
    image, placed = render(LABEL)
    result = engine.read(image)
    for item in result.lines:
        box = item.box
        assert 0 <= box.x_min < box.x_max <= image.width
        assert 0 <= box.y_min < box.y_max <= image.height
    for text, (x0, y0, x1, y1) in placed:
        best = min(result.lines, key=lambda item: cer(item.text, text))
        b = best.box
        inter = max(0.0, min(x1, b.x_max) - max(x0, b.x_min)) * max(
            0.0, min(y1, b.y_max) - max(y0, b.y_min)
        )
        union = (x1 - x0) * (y1 - y0) + b.width * b.height - inter
        assert inter / union >= 0.5, (text, (x0, y0, x1, y1), b)


@pytest.mark.slow
def test_lines_come_in_reading_order(engine: engines.OcrEngine) -> None:
    # two columns: labels on the left, values on the right, a value 4 px higher than its label
    image, _ = render(
        [
            (20, 20, "Sender:"),
            (300, 16, "Acme Widgets"),
            (20, 80, "Service:"),
            (300, 76, "Express"),
            (20, 140, "Tracking:"),
            (300, 136, "1Z 999 AA1"),
        ]
    )
    text = engine.read(image).text
    found = positions(text, ["Sender", "Acme", "Service", "Express", "Tracking", "1Z 999"])
    assert -1 not in found, text
    assert found == sorted(found), text


@pytest.mark.slow
def test_a_photo_turned_by_four_degrees_keeps_prices_beside_their_items() -> None:
    """RapidOCR only: its detector reports each line's slant. Tesseract's baselines on
    such short lines are off by degrees, and it orders this image price first."""
    engine = get_engine("rapidocr")
    rows = [("Coffee Beans", "3.50"), ("Muffin", "2.25"), ("Sparkling Water", "1.10")]
    image = Image.new("RGB", (620, 220), "white")
    draw = ImageDraw.Draw(image)
    for i, (name, price) in enumerate(rows):
        draw.text((30, 40 + 50 * i), name, font=font(26), fill="black")
        draw.text((590, 40 + 50 * i), price, font=font(26), fill="black", anchor="ra")
    turned = image.rotate(4, Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    text = engine.read(turned).text
    found = positions(text, [word for row in rows for word in row])
    assert -1 not in found, text
    assert found == sorted(found), text


@pytest.mark.slow
@pytest.mark.parametrize("name", ENGINES)
def test_a_blank_image_has_no_text_and_is_no_error(model: OcrModel, name: str) -> None:
    [result] = model.read([Image.new("RGB", (400, 300), "white")], engine=name)
    assert result == {"text": "", "lines": [], "engine": name}


@pytest.mark.slow
def test_contact_task_finds_the_email_and_phone_in_the_text(model: OcrModel) -> None:
    image, _ = render(
        [(24, 20, "Jane Doe"), (24, 80, "jane.doe@example.com"), (24, 140, "+44 20 7946 0958")]
    )
    [result] = model.read([image], task="contact")
    assert result["engine"] == "auto"
    text = result["text"]
    by_label = {entity["entity"]: entity for entity in result["entities"]}
    email, phone = by_label["email"], by_label["phone_number"]
    assert text[email["start"] : email["end"]] == email["value"] == "jane.doe@example.com"
    # a phone number's value is its digits (and the +): the slice is the number as written
    assert re.sub(r"[^0-9+]", "", text[phone["start"] : phone["end"]]) == phone["value"]
    assert phone["value"] == "+442079460958"


@pytest.mark.slow
def test_reading_without_a_task_adds_no_entities(model: OcrModel) -> None:
    image, _ = render([(24, 20, "jane.doe@example.com")])
    [result] = model.read([image], engine="tesseract")
    assert "entities" not in result
    assert set(result) == {"text", "lines", "engine"}
    assert set(result["lines"][0]) == {"text", "confidence", "box", "engine"}
    assert result["lines"][0]["engine"] == "tesseract"
    assert set(result["lines"][0]["box"]) == {"x_min", "y_min", "x_max", "y_max"}


@pytest.mark.slow
def test_each_engine_and_thread_count_is_one_shared_entry_sized_by_its_models() -> None:
    one, two = get_engine("rapidocr"), get_engine("rapidocr", threads=2)

    assert get_engine("rapidocr") is one and get_engine("rapidocr", threads=2) is two
    assert one is not two and two.threads == 2  # type: ignore[attr-defined]
    folder = Path(rapidocr.__file__).resolve().parent / "models"
    bundled = sum((folder / name).stat().st_size for name, _ in engines.RAPIDOCR_MODELS.values())
    tessdata = engines.TESSDATA_DIR / f"{engines.TESSERACT_LANG}.traineddata"
    sizes = {
        (e.key.name, e.key.threads): e.nbytes
        for e in shared_models.entries()
        if e.key.kind == "ocr-engine"
    }
    assert sizes[("rapidocr", 1)] == sizes[("rapidocr", 2)] == bundled > 1_000_000
    assert get_engine("tesseract").nbytes == tessdata.stat().st_size > 1_000_000


def doc_cer(text: str, truth: str) -> float:
    return levenshtein(normalize_text(text), normalize_text(truth)) / len(normalize_text(truth))


@pytest.mark.slow
def test_auto_reads_a_noisy_photo_sending_the_lines_tesseract_is_unsure_of_to_rapidocr() -> None:
    """A generated shipping label photographed badly (warped, turned, blurred, noisy, JPEG):
    Tesseract alone misreads it (about 5 % of characters), auto reads it within 2 %."""
    [photo] = generate(1, kind="label", noisy=True, seed=0)
    result = get_engine("auto").read(photo.image)
    assert doc_cer(result.text, photo.text) <= 0.02, result.text
    assert doc_cer(get_engine("tesseract").read(photo.image).text, photo.text) > 0.03
    by_engine = {name: [item for item in result.lines if item.engine == name] for name in ENGINES}
    assert by_engine["rapidocr"] and by_engine["tesseract"], result.lines
    assert not by_engine["auto"]
    # Tesseract keeps only the lines it is sure of
    assert min(item.confidence for item in by_engine["tesseract"]) >= 0.9 - 1e-9
    # with two threads RapidOCR reads the unsure lines beside Tesseract: the same lines
    both = get_engine("auto", threads=2).read(photo.image)
    assert [(i.text, i.engine) for i in both.lines] == [(i.text, i.engine) for i in result.lines]


@pytest.mark.slow
def test_auto_reads_a_clean_scan_that_rapidocr_alone_garbles() -> None:
    """A scanned block of text (300 dpi, binarised) on which RapidOCR's direction classifier
    turns lines upside down: auto reads it exactly, its lines mostly by Tesseract."""
    scan = generate_scans(16, seed=0)[15]
    result = get_engine("auto").read(scan.image)
    assert doc_cer(result.text, scan.text) <= 0.01, result.text
    assert doc_cer(get_engine("rapidocr").read(scan.image).text, scan.text) > 0.1
    readers = [item.engine for item in result.lines]
    assert readers.count("tesseract") > len(readers) / 2, readers


@pytest.mark.slow
def test_requests_reading_at_once_each_get_the_lines_they_get_alone() -> None:
    """The gateway reads OCR requests on several threads at once, and ``auto`` shares one
    RapidOCR (detection-only and recognition-only calls, whose flags RapidOCR keeps on the
    instance) and one Tesseract with the ``rapidocr`` and ``tesseract`` engines: every read
    made at the same time as the others still gets the lines it gets alone."""
    images = [
        render(LABEL)[0],
        render([(24, 20, "Invoice INV-7731"), (300, 20, "Total 48.20"), (24, 90, "Paid")])[0],
    ]
    readers = [("auto", 1), ("auto", 2), ("rapidocr", 1), ("tesseract", 1)]
    jobs = [(name, threads, image) for name, threads in readers for image in images] * 2

    def read(job: tuple[str, int, Image.Image]) -> list[tuple[str, str | None]]:
        name, threads, image = job
        return [
            (item.text, item.engine) for item in get_engine(name, threads=threads).read(image).lines
        ]

    alone = [read(job) for job in jobs]
    assert all(alone), alone
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(read, reversed(jobs)))[::-1]
    assert together == alone


@pytest.mark.slow
def test_auto_has_rapidocr_read_a_line_longer_than_2000_px_as_its_own_pipeline_does() -> None:
    """The lines Tesseract is unsure of go to RapidOCR's recogniser as crops. A full-width
    line of a page scanned at 300 dpi is over 2,000 px long: it must reach the recogniser as
    it is, not squashed to 32 px high by the shrinking RapidOCR applies to whole images."""
    text = (
        "Thank you for shopping with us today, please keep this receipt as proof of purchase "
        "for the warranty and returns."
    )
    image, _ = render([(30, 80, text)], size=(round(font(40).getlength(text)) + 60, 200), px=40)
    rapid = get_engine("rapidocr")
    assert isinstance(rapid, engines.RapidOcrEngine)
    [region] = rapid.detect(image)
    assert region.crop.shape[1] > 2000
    [(read, confidence)] = rapid.recognize([region.crop])
    assert cer(read, text) <= 0.02 and confidence > 0.9, read


@pytest.mark.slow
@pytest.mark.parametrize("name", ["auto", "rapidocr"])
def test_an_image_too_thin_for_rapidocr_is_refused_saying_what_to_do(
    model: OcrModel, name: str
) -> None:
    """RapidOCR shrinks an image's long side to 2,000 px and rounds both sides to multiples
    of 32: a 3,000 x 20 strip would be 0 px high. That is the sender's image, not a fault."""
    with pytest.raises(InvalidInput, match="3000 x 20 px.*engine='tesseract'"):
        model.read([Image.new("RGB", (3000, 20), "white")], engine=name)
