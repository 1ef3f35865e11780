"""The dataset service: create from a file, import (now or in the background), read and search,
append, edit or delete one example, delete.

Every function takes the tenant id and filters on it: another tenant's dataset is ``NotFound``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePosixPath
from typing import Any, overload

from PIL import Image
from sqlalchemy import Engine, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from core.db import session_scope, utcnow
from core.errors import (
    Conflict,
    ImportValidationError,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotReady,
    ParleyError,
)
from core.ids import new_id
from core.images import DEFAULT_MAX_PIXELS, decode_image
from core.logging import log_event
from core.storage import ArtifactStore
from core.tables import Dataset, Example
from training.datasets.image_import import (
    ImageExample,
    ImageLimits,
    parse_image_archive,
    single_image,
)
from training.datasets.importers import (
    Limits,
    Validated,
    decode_text,
    pick_importer,
    validate,
)
from training.datasets.types import ParsedDataset, ParsedExample, get_dataset_type

IMAGE_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg"}  # other formats: their own name (.png, ...)
SOURCES = ("import", "api", "feedback")
IMPORT_PROBLEMS = "import_problems"
"""The key of a failed import's rows at fault (``{field, line, message}``) in the dataset's
``extras`` (a failed dataset has no other extras); the API shows them as ``details``."""

__all__ = [
    "DatasetSnapshot",
    "ExampleChange",
    "StoredImages",
    "append_examples",
    "append_images",
    "get_example",
    "create_dataset",
    "delete_dataset",
    "delete_example",
    "get_dataset",
    "list_datasets",
    "list_examples",
    "run_import",
    "snapshot",
    "update_example",
]


def _source_key(tenant_id: str, dataset_id: str, fmt: str) -> str:
    return f"tenants/{tenant_id}/datasets/{dataset_id}/source.{fmt}"


def create_dataset(
    session: Session,
    store: ArtifactStore,
    *,
    tenant_id: str,
    name: str,
    dataset_type: str,
    filename: str | None,
    data: bytes,
    fmt: str | None = None,
) -> Dataset:
    """A dataset record in ``processing`` with its source file stored; import it next."""
    get_dataset_type(dataset_type)
    name = (name or "").strip() or PurePosixPath(filename or "dataset").stem
    if len(name) > 200:
        raise InvalidInput("dataset name must be at most 200 characters")
    importer = pick_importer(filename, fmt, dataset_type)
    dataset = Dataset(
        id=new_id("dataset"),
        tenant_id=tenant_id,
        name=name,
        type=dataset_type,
        status="processing",
        source_format=importer.name,
    )
    dataset.source_key = _source_key(tenant_id, dataset.id, importer.name)
    store.put_bytes(dataset.source_key, data)
    session.add(dataset)
    session.flush()
    return dataset


def run_import(engine: Engine, store: ArtifactStore, dataset_id: str, limits: Limits) -> Dataset:
    """Parse and validate the stored source; the dataset ends ``ready`` or ``failed``."""
    with session_scope(engine) as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"dataset {dataset_id} not found")
        failure: ParleyError | None
        try:
            data = store.get_bytes(dataset.source_key or "")
            importer = pick_importer(None, dataset.source_format, dataset.type)
            if get_dataset_type(dataset.type).modality == "image":
                images = parse_image_archive(data, dataset.type, limits=image_limits(limits))
                checked = _store_images(store, dataset, images)
            else:
                parsed = importer.parse(decode_text(data), dataset.type)
                checked = validate(parsed, dataset_type=dataset.type, limits=limits)
        except ParleyError as e:
            dataset.status = "failed"
            dataset.status_message = e.message
            dataset.extras = {IMPORT_PROBLEMS: e.details.get("details", [])}
            log_event("dataset.import_failed", dataset=dataset_id, reason=e.message)
            session.flush()
            failure = e
        else:
            failure = None
            session.execute(delete(Example).where(Example.dataset_id == dataset_id))
            _insert(session, dataset_id, checked.examples)
            dataset.extras = checked.extras
            dataset.num_duplicates = checked.duplicates
            _refresh_counts(session, dataset)
            dataset.status = "ready"
            dataset.status_message = _duplicates_message(
                checked.duplicates, checked.first_duplicate_line
            )
            log_event("dataset.imported", dataset=dataset_id, examples=dataset.num_examples)
        result = dataset
    if failure is not None:
        raise failure
    return result


def _duplicates_message(count: int, first_line: int | None) -> str | None:
    if not count:
        return None
    return (
        f"{count} duplicate example{'s' if count != 1 else ''} (same text and label) skipped; "
        f"the first at line {first_line}"
    )


def image_limits(limits: Limits) -> ImageLimits:
    return ImageLimits(
        max_examples=limits.max_examples,
        max_labels=limits.max_labels,
        max_pixels=limits.max_image_pixels,
    )


def image_key(dataset: Dataset, sha256: str, fmt: str) -> str:
    """Where an image lives: once per dataset, named by its content."""
    suffix = IMAGE_SUFFIX.get(fmt, "." + fmt.lower())
    return f"tenants/{dataset.tenant_id}/datasets/{dataset.id}/images/{sha256}{suffix}"


def _image_target(ex: ImageExample) -> str:
    return json.dumps([ex.label, ex.labels, ex.boxes], sort_keys=True)


def _store_images(
    store: ArtifactStore,
    dataset: Dataset,
    images: list[ImageExample],
    *,
    existing: set[tuple[str, str]] | None = None,
    source: str = "import",
) -> Validated:
    """Store each distinct image once and make its example rows; an image with the same
    content and the same label(s) or boxes as one already kept is a duplicate."""
    seen: set[tuple[str, str]] = set(existing or ())
    kept: list[ParsedExample] = []
    duplicates, first_dup = 0, None
    stored: set[str] = set()
    for ex in images:
        key = (ex.sha256, _image_target(ex))
        if key in seen:
            duplicates += 1
            first_dup = first_dup or ex.line
            continue
        seen.add(key)
        blob = image_key(dataset, ex.sha256, ex.format)
        if blob not in stored:
            store.put_bytes(blob, ex.data)
            stored.add(blob)
        kept.append(
            ParsedExample(
                line=ex.line,
                label=ex.label,
                labels=ex.labels,
                annotations=ex.boxes,
                blob_key=blob,
                width=ex.width,
                height=ex.height,
                file=ex.file,
                source=source,
            )
        )
    return Validated(
        examples=kept, duplicates=duplicates, first_duplicate_line=first_dup, extras={}
    )


def _insert(session: Session, dataset_id: str, examples: list[ParsedExample]) -> None:
    rows = [
        {
            "dataset_id": dataset_id,
            "text": ex.text,
            "label": ex.label,
            "labels": ex.labels,
            # an image without boxes keeps [] (a background example); text keeps None
            "annotations": ex.annotations if ex.annotations or ex.blob_key else None,
            "blob_key": ex.blob_key,
            "line": ex.line,
            "width": ex.width,
            "height": ex.height,
            "file": ex.file,
            "source": ex.source,
        }
        for ex in examples
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Example), rows[start : start + 5000])


def _refresh_counts(session: Session, dataset: Dataset) -> None:
    """Examples per label: the label of each example; each label of a multi-label image; each
    box of a detection dataset (``label_counts``), and the number of examples."""
    if dataset.type in ("image-multi-label", "image-detection"):
        counts: dict[str, int] = defaultdict(int)
        column = Example.labels if dataset.type == "image-multi-label" else Example.annotations
        for (value,) in session.execute(select(column).where(Example.dataset_id == dataset.id)):
            for item in value or []:
                counts[item if isinstance(item, str) else str(item.get("label"))] += 1
    else:
        rows = session.execute(
            select(Example.label, func.count())
            .where(Example.dataset_id == dataset.id, Example.label.is_not(None))
            .group_by(Example.label)
        )
        counts = {label: n for label, n in rows if label is not None}  # narrows str | None
    dataset.label_counts = {k: counts[k] for k in sorted(counts)}
    dataset.num_examples = (
        session.scalar(
            select(func.count()).select_from(Example).where(Example.dataset_id == dataset.id)
        )
        or 0
    )
    dataset.updated_at = utcnow()


def get_dataset(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.tenant_id != tenant_id:
        raise NotFound(f"dataset {dataset_id} not found")
    return dataset


def list_datasets(session: Session, tenant_id: str) -> list[Dataset]:
    return list(
        session.scalars(
            select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.created_at)
        )
    )


def list_examples(
    session: Session,
    tenant_id: str,
    dataset_id: str,
    *,
    offset: int = 0,
    limit: int = 100,
    label: str | None = None,
    q: str | None = None,
) -> tuple[int, list[Example]]:
    """(total matching, one page) of a dataset's examples in import order; ``label`` keeps
    one label's, ``q`` those whose text (or an image's file name) holds it, in any case."""
    get_dataset(session, tenant_id, dataset_id)
    where = [Example.dataset_id == dataset_id]
    if label is not None:
        where.append(Example.label == label)
    if q:
        where.append(
            or_(
                Example.text.icontains(q, autoescape=True),
                Example.file.icontains(q, autoescape=True),
            )
        )
    total = session.scalar(select(func.count()).select_from(Example).where(*where)) or 0
    page = session.scalars(
        select(Example).where(*where).order_by(Example.id).offset(offset).limit(limit)
    )
    return total, list(page)


def append_examples(
    session: Session,
    tenant_id: str,
    dataset_id: str,
    parsed: ParsedDataset,
    limits: Limits,
    *,
    source: str = "import",
) -> tuple[Dataset, int, int]:
    """Append examples to a ready dataset: (dataset, added, duplicates skipped). ``source``
    ``feedback`` marks examples taken from real conversations (used in training only with
    ``params.with_feedback``)."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset.status != "ready":
        raise InvalidInput(f"dataset {dataset_id} is {dataset.status}; append to a ready dataset")
    if source not in SOURCES:
        raise InvalidInput(f"source {source!r}: use one of {', '.join(SOURCES)}")
    existing = {
        (t or "", lab)
        for t, lab in session.execute(
            select(Example.text, Example.label).where(Example.dataset_id == dataset_id)
        )
    }
    checked = validate(parsed, dataset_type=dataset.type, limits=limits, existing=existing)
    if not checked.examples and not checked.duplicates:
        raise ImportValidationError("no examples given", errors=[])
    _insert(session, dataset_id, [replace(ex, source=source) for ex in checked.examples])
    dataset.num_duplicates += checked.duplicates
    _refresh_counts(session, dataset)
    return dataset, len(checked.examples), checked.duplicates


def append_images(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    dataset_id: str,
    images: list[ImageExample],
    limits: Limits,
    *,
    source: str = "api",
) -> tuple[Dataset, int, int]:
    """Append image examples to a ready image dataset: (dataset, added, duplicates skipped).
    ``source`` is ``api`` or ``feedback`` (a corrected prediction, used in training only with
    ``params.with_feedback``)."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset.status != "ready":
        raise InvalidInput(f"dataset {dataset_id} is {dataset.status}; append to a ready dataset")
    if source not in SOURCES:
        raise InvalidInput(f"source {source!r}: use one of {', '.join(SOURCES)}")
    existing = {
        (str(blob).rsplit("/", 1)[-1].split(".")[0], json.dumps([lab, labs, ann], sort_keys=True))
        for blob, lab, labs, ann in session.execute(
            select(Example.blob_key, Example.label, Example.labels, Example.annotations).where(
                Example.dataset_id == dataset_id
            )
        )
    }
    if len(existing) + len(images) > limits.max_examples:
        raise LimitExceeded(
            f"the dataset would have {len(existing) + len(images)} examples; the limit is "
            f"{limits.max_examples} (PARLEY_LIMITS__MAX_EXAMPLES)",
            limit="max_examples",
        )
    checked = _store_images(store, dataset, images, existing=existing, source=source)
    _insert(session, dataset_id, checked.examples)
    dataset.num_duplicates += checked.duplicates
    _refresh_counts(session, dataset)
    return dataset, len(checked.examples), checked.duplicates


def get_example(session: Session, tenant_id: str, dataset_id: str, example_id: int) -> Example:
    get_dataset(session, tenant_id, dataset_id)
    example = session.get(Example, example_id)
    if example is None or example.dataset_id != dataset_id:
        raise NotFound(f"example {example_id} not found in dataset {dataset_id}")
    return example


@dataclass(frozen=True)
class ExampleChange:
    """What to change in one example; ``None`` keeps a field as it is. Text examples take
    ``text``, ``label`` and ``entities``; image examples ``label`` (image), ``labels``
    (image-multi-label) or ``boxes`` (image-detection)."""

    text: str | None = None
    label: str | None = None
    entities: list[dict[str, Any]] | None = None
    labels: list[str] | None = None
    boxes: list[dict[str, Any]] | None = None


def _editable(session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset.status != "ready":
        raise NotReady(
            f"dataset {dataset_id} is {dataset.status}; examples of a ready dataset can be "
            "changed (wait for its import to finish, or upload the file again if it failed)"
        )
    return dataset


def update_example(
    session: Session,
    store: ArtifactStore,
    tenant_id: str,
    dataset_id: str,
    example_id: int,
    change: ExampleChange,
    limits: Limits,
) -> Example:
    """Edit one example of a ready dataset, checked as an imported one is; ``Conflict`` when
    the dataset already has another example just like the result. The dataset's counts follow."""
    dataset = _editable(session, tenant_id, dataset_id)
    example = get_example(session, tenant_id, dataset_id, example_id)
    if example.blob_key is None:
        _change_text(session, dataset, example, change, limits)
    else:
        _change_image(session, store, dataset, example, change, limits)
    session.flush()
    _refresh_counts(session, dataset)
    if len(dataset.label_counts) > limits.max_labels:  # an image's new labels or boxes
        raise LimitExceeded(
            f"the dataset would have {len(dataset.label_counts)} labels; the limit is "
            f"{limits.max_labels} per dataset (PARLEY_LIMITS__MAX_LABELS): reuse a label the "
            "dataset has",
            limit="max_labels",
        )
    return example


def _change_text(
    session: Session, dataset: Dataset, example: Example, change: ExampleChange, limits: Limits
) -> None:
    if change.labels is not None or change.boxes is not None:
        raise InvalidInput("`labels` and `boxes` are for image examples; send `text` or `label`")
    if change.text is not None and change.entities is None and example.annotations:
        raise InvalidInput(
            "the example has entity spans over its text; send `entities` for the new text too"
        )
    parsed = ParsedExample(
        line=example.line or 0,
        text=example.text if change.text is None else change.text,
        label=example.label if change.label is None else change.label,
        annotations=example.annotations if change.entities is None else change.entities,
    )
    others = {
        (t or "", lab)
        for t, lab in session.execute(
            select(Example.text, Example.label).where(
                Example.dataset_id == dataset.id, Example.id != example.id
            )
        )
    }
    try:
        checked = validate(
            ParsedDataset([parsed]), dataset_type=dataset.type, limits=limits, existing=others
        )
    except ImportValidationError as e:
        problems = [str(p["message"]) for p in e.details.get("errors", [])]
        raise InvalidInput("; ".join(problems) or e.message) from e
    if checked.duplicates:
        raise Conflict("the dataset already has an example with this text and label")
    kept = checked.examples[0]
    example.text, example.label, example.annotations = kept.text, kept.label, kept.annotations


def _change_image(
    session: Session,
    store: ArtifactStore,
    dataset: Dataset,
    example: Example,
    change: ExampleChange,
    limits: Limits,
) -> None:
    if change.text is not None or change.entities is not None:
        raise InvalidInput("an image example takes `label`, `labels` or `boxes`, not text")
    kind, key = dataset.type, str(example.blob_key)
    image = single_image(
        example.file or key.rsplit("/", 1)[-1],
        store.get_bytes(key),
        kind,
        label=change.label if change.label is not None else example.label,
        labels=change.labels
        if change.labels is not None
        else (example.labels if kind == "image-multi-label" else None),
        boxes=change.boxes
        if change.boxes is not None
        else (example.annotations if kind == "image-detection" else None),
        max_pixels=limits.max_image_pixels,
    )
    target = _image_target(image)
    twins = session.execute(
        select(Example.label, Example.labels, Example.annotations).where(
            Example.dataset_id == dataset.id, Example.blob_key == key, Example.id != example.id
        )
    )
    if any(json.dumps(list(row), sort_keys=True) == target for row in twins):
        raise Conflict("the dataset already has this image with these labels or boxes")
    example.label, example.labels, example.annotations = image.label, image.labels, image.boxes


def delete_example(
    session: Session, store: ArtifactStore, tenant_id: str, dataset_id: str, example_id: int
) -> Dataset:
    """Delete one example of a ready dataset (and its image, when no other example shows it);
    the dataset's counts follow."""
    dataset = _editable(session, tenant_id, dataset_id)
    example = get_example(session, tenant_id, dataset_id, example_id)
    key = example.blob_key
    session.delete(example)
    session.flush()
    _refresh_counts(session, dataset)
    if key is not None:
        shared = session.scalar(
            select(Example.id)
            .where(Example.dataset_id == dataset_id, Example.blob_key == key)
            .limit(1)
        )
        if shared is None:
            store.delete_prefix(key)
    return dataset


def delete_dataset(session: Session, store: ArtifactStore, tenant_id: str, dataset_id: str) -> None:
    dataset = get_dataset(session, tenant_id, dataset_id)
    session.execute(delete(Example).where(Example.dataset_id == dataset_id))
    session.delete(dataset)
    store.delete_prefix(f"tenants/{tenant_id}/datasets/{dataset_id}")


class StoredImages(Sequence[Image.Image]):
    """A dataset's images, decoded from the store when read (upright RGB), so that a training
    run holds compressed bytes, not pixels, for the images it is not using."""

    def __init__(self, store: ArtifactStore, keys: Sequence[str], max_pixels: int = 0) -> None:
        self.store, self.keys = store, list(keys)
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS

    def __len__(self) -> int:
        return len(self.keys)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...
    @overload
    def __getitem__(self, index: slice) -> StoredImages: ...

    def __getitem__(self, index: int | slice) -> Image.Image | StoredImages:
        if isinstance(index, slice):
            return StoredImages(self.store, self.keys[index], self.max_pixels)
        key = self.keys[index]
        return decode_image(self.store.get_bytes(key), name=key, max_pixels=self.max_pixels).image

    def take(self, idx: Sequence[int]) -> StoredImages:
        return StoredImages(self.store, [self.keys[i] for i in idx], self.max_pixels)


@dataclass(frozen=True)
class DatasetSnapshot:
    """What a training run sees: the examples and a hash that names their content."""

    dataset_id: str
    type: str
    texts: list[str]
    labels: list[str]
    annotations: list[list[dict[str, Any]] | None]  # entity spans, or an image's boxes
    extras: dict[str, Any]
    content_hash: str
    blob_keys: list[str | None] = field(default_factory=list)  # images
    multi_labels: list[list[str] | None] = field(default_factory=list)  # image-multi-label
    example_ids: list[int] = field(default_factory=list)  # Example.id, in the same order


def snapshot(
    session: Session, tenant_id: str, dataset_id: str, *, with_feedback: bool = False
) -> DatasetSnapshot:
    """The dataset's examples in order; feedback examples only ``with_feedback``."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    where = [Example.dataset_id == dataset_id]
    if not with_feedback:
        where.append(Example.source != "feedback")
    rows = session.execute(
        select(
            Example.text,
            Example.label,
            Example.annotations,
            Example.blob_key,
            Example.labels,
            Example.id,
        )
        .where(*where)
        .order_by(Example.id)
    ).all()
    texts = [r[0] or "" for r in rows]
    labels = [r[1] or "" for r in rows]
    h = hashlib.sha256()
    for t, lab, ann, blob, multi, _ in rows:
        row = [t, lab, ann] if blob is None and multi is None else [t, lab, ann, blob, multi]
        h.update(json.dumps(row, sort_keys=True).encode())
    return DatasetSnapshot(
        dataset_id=dataset_id,
        type=dataset.type,
        texts=texts,
        labels=labels,
        annotations=[r[2] for r in rows],
        extras=dataset.extras or {},
        content_hash=h.hexdigest(),
        blob_keys=[r[3] for r in rows],
        multi_labels=[r[4] for r in rows],
        example_ids=[r[5] for r in rows],
    )
