"""Image datasets from a zip: the three layouts, checked file by file, all or nothing.

* ``image``: one folder per label (``cats/a.jpg``), optionally inside one wrapping folder.
* ``image-multi-label``: images plus ``labels.csv`` (``file,labels``, labels joined by ``|``),
  or one folder per label where the same image may appear in several folders.
* ``image-detection``: images plus boxes in pixels of the upright image, as ``annotations.csv``
  (``file,label,x_min,y_min,x_max,y_max``), Pascal VOC XML (one ``.xml`` per image) or COCO
  JSON (``images``, ``annotations`` with ``bbox: [x, y, w, h]``, ``categories``). An image with
  no box is a background example.

Every image is decoded (``core.images.decode_image``: size capped before decoding, EXIF
orientation applied) so that a corrupt file fails the import, not a later training run. Every
problem is collected with the file (and CSV line) at fault; any problem fails the whole import.
"""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, ClassVar

from core.errors import ImportValidationError, InvalidInput, LimitExceeded
from core.images import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from training.datasets.archives import ArchiveLimits, Member, read_zip
from training.datasets.formats.base import importers
from training.datasets.types import DATASET_TYPES

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageExample",
    "ImageLimits",
    "ZipImporter",
    "check_boxes",
    "parse_image_archive",
    "single_image",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
MAX_REPORTED = 100
MAX_LABEL_CHARS = 200


@dataclass(frozen=True)
class ImageLimits:
    max_examples: int = 200_000
    max_labels: int = 1_000
    max_pixels: int = DEFAULT_MAX_PIXELS
    archive: ArchiveLimits = field(default_factory=ArchiveLimits)


@dataclass(frozen=True)
class ImageExample:
    file: str
    data: bytes
    sha256: str
    width: int
    height: int
    format: str
    line: int  # position in the archive (1-based), for messages and ordering
    label: str | None = None
    labels: list[str] | None = None
    boxes: list[dict[str, Any]] | None = None


@importers.register("zip")
class ZipImporter:
    """Image datasets arrive as one zip (``parse_image_archive``); they are read as bytes, not
    text, so ``parse`` is never the way in."""

    name: ClassVar[str] = "zip"
    extensions: ClassVar[tuple[str, ...]] = (".zip",)
    dataset_types: ClassVar[tuple[str, ...]] = tuple(
        n for n, t in DATASET_TYPES.items() if t.modality == "image"
    )

    def parse(self, text: str, dataset_type: str) -> Any:
        raise InvalidInput("a zip is read as bytes: use parse_image_archive")


class _Problems:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, file: str, message: str, line: int | None = None) -> None:
        if len(self.items) < MAX_REPORTED:
            item: dict[str, Any] = {"file": file, "message": message}
            if line is not None:
                item["line"] = line
            self.items.append(item)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "; ".join(
            f"{p['file']}{' line ' + str(p['line']) if 'line' in p else ''}: {p['message']}"
            for p in self.items[:10]
        )
        more = f" (and {len(self.items) - 10} more)" if len(self.items) > 10 else ""
        raise ImportValidationError(f"the zip has problems: {shown}{more}", errors=self.items)


def _strip_wrapper(members: list[Member]) -> list[Member]:
    """Drop one folder that wraps everything (``dataset/cats/a.jpg`` → ``cats/a.jpg``): when
    every path starts with the same folder and every image lies at least two folders deep."""
    firsts = {m.name.split("/")[0] for m in members}
    images = [m for m in members if _is_image(m.name)]
    if len(firsts) == 1 and images and all(m.name.count("/") >= 2 for m in images):
        return [Member(m.name.split("/", 1)[1], m.data) for m in members if "/" in m.name]
    return members


def _is_image(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def check_boxes(
    boxes: list[dict[str, Any]], width: int, height: int, *, where: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Boxes as ``{label, x_min, y_min, x_max, y_max}`` floats, and the problems found."""
    good, problems = [], []
    for i, box in enumerate(boxes):
        label = str(box.get("label", "")).strip()
        try:
            x0, y0, x1, y1 = (float(box[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        except (KeyError, TypeError, ValueError):
            problems.append(f"{where} box {i + 1}: x_min, y_min, x_max, y_max must be numbers")
            continue
        if not label:
            problems.append(f"{where} box {i + 1}: missing label")
        elif len(label) > MAX_LABEL_CHARS:
            problems.append(f"{where} box {i + 1}: label longer than {MAX_LABEL_CHARS}")
        elif not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            problems.append(f"{where} box {i + 1}: coordinates must be finite numbers")
        elif x1 <= x0 or y1 <= y0:
            problems.append(
                f"{where} box {i + 1} ({label}): zero or negative area "
                f"({x0:g},{y0:g})-({x1:g},{y1:g}); x_max must exceed x_min, y_max y_min"
            )
        elif x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
            problems.append(
                f"{where} box {i + 1} ({label}): ({x0:g},{y0:g})-({x1:g},{y1:g}) lies outside "
                f"the {width}x{height} image"
            )
        else:
            good.append(
                {
                    "label": label,
                    "x_min": max(x0, 0.0),
                    "y_min": max(y0, 0.0),
                    "x_max": min(x1, float(width)),
                    "y_max": min(y1, float(height)),
                }
            )
    return good, problems


def _read_csv(
    member: Member, problems: _Problems, header: list[str]
) -> list[tuple[int, dict[str, str]]]:
    try:
        text = member.data.decode("utf-8-sig")
    except UnicodeDecodeError:
        problems.add(member.name, "is not UTF-8 text")
        return []
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    missing = [h for h in header if h not in fields]
    if missing:
        problems.add(member.name, f"needs the columns {','.join(header)}; missing {missing}")
        return []
    rows = []
    for i, row in enumerate(reader, start=2):
        rows.append((i, {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}))
    return rows


def _resolve(base: str, file: str, images: dict[str, Any]) -> str | None:
    """An image named in an annotation file, relative to that file's folder or the root."""
    file = file.replace("\\", "/").lstrip("./")
    parent = str(PurePosixPath(base).parent)
    for candidate in ((f"{parent}/{file}" if parent != "." else file), file):
        if candidate in images:
            return candidate
    by_name = [k for k in images if PurePosixPath(k).name == file]
    return by_name[0] if len(by_name) == 1 else None


def parse_image_archive(
    data: bytes, dataset_type: str, *, limits: ImageLimits | None = None
) -> list[ImageExample]:
    """The examples of an image dataset zip (see the module docstring), or
    ``ImportValidationError`` listing every file at fault."""
    limits = limits or ImageLimits()
    members = _strip_wrapper(read_zip(data, limits.archive))
    problems = _Problems()
    images: dict[str, tuple[int, Member, DecodedImage]] = {}
    others: list[Member] = []
    for position, member in enumerate(members, start=1):
        if not _is_image(member.name):
            others.append(member)
            continue
        try:
            decoded = decode_image(member.data, name=member.name, max_pixels=limits.max_pixels)
        except InvalidInput as e:
            problems.add(member.name, e.message.removeprefix(f"{member.name}: "))
            continue
        images[member.name] = (position, member, decoded)
    if not images and not problems.items:
        raise ImportValidationError(
            "the zip holds no images (JPEG, PNG, WebP, GIF, BMP or TIFF)", errors=[]
        )
    if len(images) > limits.max_examples:
        raise LimitExceeded(
            f"{len(images)} images is over the limit of {limits.max_examples} per dataset "
            "(PARLEY_LIMITS__MAX_EXAMPLES)",
            limit="max_examples",
        )
    targets: dict[str, dict[str, Any]]  # image name -> label, labels or boxes
    if dataset_type == "image":
        labels = _folder_labels(images, problems, multi=False)
        targets = {name: {"label": next(iter(ls))} for name, ls in labels.items()}
    elif dataset_type == "image-multi-label":
        csv_member = next((m for m in others if PurePosixPath(m.name).name == "labels.csv"), None)
        if csv_member is not None:
            targets = _csv_labels(csv_member, images, problems)
        else:
            targets = {
                name: {"labels": sorted(ls)}
                for name, ls in _folder_labels(images, problems, multi=True).items()
            }
    elif dataset_type == "image-detection":
        targets = _detection_targets(others, images, problems)
    else:  # pragma: no cover - callers pass image types only
        raise ImportValidationError(f"{dataset_type} is not an image dataset type", errors=[])
    problems.raise_if_any()
    examples = []
    all_labels: set[str] = set()
    for name, target in targets.items():
        position, member, decoded = images[name]
        boxes = target.get("boxes")
        all_labels.update([target["label"]] if "label" in target else target.get("labels") or [])
        all_labels.update(b["label"] for b in boxes or [])
        examples.append(
            ImageExample(
                file=name,
                data=member.data,
                sha256=decoded.sha256,
                width=decoded.width,
                height=decoded.height,
                format=decoded.format,
                line=position,
                label=target.get("label"),
                labels=target.get("labels"),
                boxes=boxes,
            )
        )
    if len(all_labels) > limits.max_labels:
        raise LimitExceeded(
            f"{len(all_labels)} labels is over the limit of {limits.max_labels} per dataset "
            "(PARLEY_LIMITS__MAX_LABELS)",
            limit="max_labels",
        )
    examples.sort(key=lambda e: e.line)
    return examples


def _folder_labels(
    images: dict[str, Any], problems: _Problems, *, multi: bool
) -> dict[str, set[str]]:
    """Each image's label(s) from its folder; with ``multi``, one image (by content) found in
    several folders gets all their labels, under its first path."""
    by_content: dict[str, str] = {}
    labels: dict[str, set[str]] = defaultdict(set)
    for name, (_, _, decoded) in images.items():
        parts = name.split("/")
        if len(parts) != 2:
            problems.add(
                name,
                "put each image in a folder named for its label (label/image.jpg)"
                if len(parts) == 1
                else "nested too deep; use one folder level per label (label/image.jpg)",
            )
            continue
        label = parts[0].strip()
        if not label or len(label) > MAX_LABEL_CHARS:
            problems.add(name, f"the folder name must be a label of 1-{MAX_LABEL_CHARS} chars")
            continue
        first = by_content.setdefault(decoded.sha256, name) if multi else name
        labels[first].add(label)
    return dict(labels)


def _csv_labels(
    member: Member, images: dict[str, Any], problems: _Problems
) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}
    for line, row in _read_csv(member, problems, ["file", "labels"]):
        name = _resolve(member.name, row["file"], images)
        if name is None:
            problems.add(member.name, f"names {row['file']!r}, which is not in the zip", line)
            continue
        labels = sorted({p.strip() for p in row["labels"].split("|") if p.strip()})
        if not labels:
            problems.add(member.name, f"no labels for {row['file']!r}", line)
        elif any(len(label) > MAX_LABEL_CHARS for label in labels):
            problems.add(member.name, f"a label is longer than {MAX_LABEL_CHARS} characters", line)
        elif name in targets:
            problems.add(member.name, f"{row['file']!r} is listed twice", line)
        else:
            targets[name] = {"labels": labels}
    for name in images:
        if name not in targets:
            problems.add(name, "not listed in labels.csv; add a row with its labels")
    return targets


def _detection_targets(
    others: list[Member], images: dict[str, Any], problems: _Problems
) -> dict[str, dict[str, Any]]:
    raw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    sources = 0
    for member in others:
        base = PurePosixPath(member.name).name.lower()
        if base == "annotations.csv":
            sources += 1
            header = ["file", "label", "x_min", "y_min", "x_max", "y_max"]
            for line, row in _read_csv(member, problems, header):
                name = _resolve(member.name, row["file"], images)
                if name is None:
                    problems.add(member.name, f"names {row['file']!r}, not in the zip", line)
                    continue
                _, _, decoded = images[name]
                good, bad = check_boxes([row], decoded.width, decoded.height, where=row["file"])
                for message in bad:
                    problems.add(member.name, message.replace(" box 1", " box"), line)
                raw[name].extend(good)
        elif base.endswith(".xml"):
            sources += 1
            _voc(member, images, problems, raw)
        elif base.endswith(".json"):
            sources += 1
            _coco(member, images, problems, raw)
    if not sources:
        problems.add(
            "(zip)",
            "no boxes found: add annotations.csv (file,label,x_min,y_min,x_max,y_max), "
            "Pascal VOC .xml files or a COCO .json",
        )
    return {name: {"boxes": raw.get(name, [])} for name in images}


def _voc(
    member: Member,
    images: dict[str, Any],
    problems: _Problems,
    raw: dict[str, list[dict[str, Any]]],
) -> None:
    if b"<!DOCTYPE" in member.data or b"<!ENTITY" in member.data:
        problems.add(member.name, "holds a DTD or entity declarations; VOC files need neither")
        return
    try:
        root = ET.fromstring(member.data)  # noqa: S314 - DTDs and entities refused above
    except ET.ParseError as e:
        problems.add(member.name, f"is not valid XML ({e})")
        return
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        problems.add(member.name, "has no <filename>")
        return
    name = _resolve(member.name, filename, images)
    if name is None:
        problems.add(member.name, f"names {filename!r}, which is not in the zip")
        return
    _, _, decoded = images[name]
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        boxes.append(
            {
                "label": (obj.findtext("name") or "").strip(),
                **{
                    k: (bb.findtext(k) if bb is not None else None)
                    for k in ("xmin", "ymin", "xmax", "ymax")
                },
            }
        )
    boxes = [
        {
            "label": b["label"],
            "x_min": b["xmin"],
            "y_min": b["ymin"],
            "x_max": b["xmax"],
            "y_max": b["ymax"],
        }
        for b in boxes
    ]
    good, bad = check_boxes(boxes, decoded.width, decoded.height, where=filename)
    for message in bad:
        problems.add(member.name, message)
    raw[name].extend(good)


def _coco(
    member: Member,
    images: dict[str, Any],
    problems: _Problems,
    raw: dict[str, list[dict[str, Any]]],
) -> None:
    try:
        doc = json.loads(member.data)
        cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        files = {int(i["id"]): str(i["file_name"]) for i in doc["images"]}
        anns = list(doc["annotations"])
    except (ValueError, KeyError, TypeError) as e:
        problems.add(
            member.name,
            f"is not COCO JSON with images, annotations and categories ({type(e).__name__}: {e})",
        )
        return
    for i, ann in enumerate(anns):
        where = f"annotation {i + 1}"
        try:
            file = files[int(ann["image_id"])]
            label = cats[int(ann["category_id"])]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            problems.add(
                member.name,
                f"{where}: needs image_id, category_id and bbox [x,y,w,h] "
                "that match the images and categories",
            )
            continue
        name = _resolve(member.name, file, images)
        if name is None:
            problems.add(member.name, f"{where} names {file!r}, which is not in the zip")
            continue
        _, _, decoded = images[name]
        box = {"label": label, "x_min": x, "y_min": y, "x_max": x + w, "y_max": y + h}
        good, bad = check_boxes([box], decoded.width, decoded.height, where=f"{where} ({file})")
        for message in bad:
            problems.add(member.name, message.replace(" box 1", ""))
        raw[name].extend(good)


def single_image(
    name: str,
    data: bytes,
    dataset_type: str,
    *,
    label: str | None = None,
    labels: list[str] | None = None,
    boxes: list[dict[str, Any]] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ImageExample:
    """One image example added through the API, checked like an imported one."""
    decoded = decode_image(data, name=name, max_pixels=max_pixels)
    target: dict[str, Any] = {}
    if dataset_type == "image":
        label = (label or "").strip()
        if not label or len(label) > MAX_LABEL_CHARS or labels or boxes:
            raise InvalidInput(f"{name}: an image example needs one `label` (1-200 characters)")
        target["label"] = label
    elif dataset_type == "image-multi-label":
        names = sorted({x.strip() for x in labels or [] if x.strip()})
        if not names or any(len(x) > MAX_LABEL_CHARS for x in names) or label or boxes:
            raise InvalidInput(f"{name}: a multi-label example needs `labels` (one or more)")
        target["labels"] = names
    else:
        if label or labels:
            raise InvalidInput(f"{name}: a detection example has `boxes`, not labels")
        good, bad = check_boxes(list(boxes or []), decoded.width, decoded.height, where=name)
        if bad:
            raise InvalidInput("; ".join(bad))
        target["boxes"] = good
    return ImageExample(
        file=name,
        data=data,
        sha256=decoded.sha256,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        line=0,
        **target,
    )
