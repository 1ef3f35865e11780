"""The dataset service: create from a file, import (now or in the background), read, append, delete.

Every function takes the tenant id and filters on it: another tenant's dataset is ``NotFound``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from core.db import session_scope, utcnow
from core.errors import ImportValidationError, InvalidInput, NotFound, ParleyError
from core.ids import new_id
from core.logging import log_event
from core.storage import ArtifactStore
from core.tables import Dataset, Example
from training.datasets.importers import (
    Limits,
    ParsedDataset,
    ParsedExample,
    decode_text,
    pick_importer,
    validate,
)
from training.datasets.types import get_dataset_type

__all__ = [
    "DatasetSnapshot",
    "append_examples",
    "create_dataset",
    "delete_dataset",
    "get_dataset",
    "list_datasets",
    "list_examples",
    "run_import",
    "snapshot",
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
        try:
            data = store.get_bytes(dataset.source_key or "")
            importer = pick_importer(None, dataset.source_format, dataset.type)
            parsed = importer.parse(decode_text(data), dataset.type)
            checked = validate(parsed, dataset_type=dataset.type, limits=limits)
        except ParleyError as e:
            dataset.status = "failed"
            dataset.status_message = e.message
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


def _insert(session: Session, dataset_id: str, examples: list[ParsedExample]) -> None:
    rows = [
        {
            "dataset_id": dataset_id,
            "text": ex.text,
            "label": ex.label,
            "labels": ex.labels,
            "annotations": ex.annotations or None,
            "blob_key": ex.blob_key,
            "line": ex.line,
        }
        for ex in examples
    ]
    for start in range(0, len(rows), 5000):
        session.execute(insert(Example), rows[start : start + 5000])


def _refresh_counts(session: Session, dataset: Dataset) -> None:
    counts = dict(
        session.execute(
            select(Example.label, func.count())
            .where(Example.dataset_id == dataset.id, Example.label.is_not(None))
            .group_by(Example.label)
        ).all()
    )
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
) -> tuple[int, list[Example]]:
    """(total matching, one page) of a dataset's examples in import order."""
    get_dataset(session, tenant_id, dataset_id)
    where = [Example.dataset_id == dataset_id]
    if label is not None:
        where.append(Example.label == label)
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
) -> tuple[Dataset, int, int]:
    """Append examples to a ready dataset: (dataset, added, duplicates skipped)."""
    dataset = get_dataset(session, tenant_id, dataset_id)
    if dataset.status != "ready":
        raise InvalidInput(f"dataset {dataset_id} is {dataset.status}; append to a ready dataset")
    existing = {
        (t or "", lab)
        for t, lab in session.execute(
            select(Example.text, Example.label).where(Example.dataset_id == dataset_id)
        )
    }
    checked = validate(parsed, dataset_type=dataset.type, limits=limits, existing=existing)
    if not checked.examples and not checked.duplicates:
        raise ImportValidationError("no examples given", errors=[])
    _insert(session, dataset_id, checked.examples)
    dataset.num_duplicates += checked.duplicates
    _refresh_counts(session, dataset)
    return dataset, len(checked.examples), checked.duplicates


def delete_dataset(session: Session, store: ArtifactStore, tenant_id: str, dataset_id: str) -> None:
    dataset = get_dataset(session, tenant_id, dataset_id)
    session.execute(delete(Example).where(Example.dataset_id == dataset_id))
    session.delete(dataset)
    store.delete_prefix(f"tenants/{tenant_id}/datasets/{dataset_id}")


@dataclass(frozen=True)
class DatasetSnapshot:
    """What a training run sees: the examples and a hash that names their content."""

    dataset_id: str
    type: str
    texts: list[str]
    labels: list[str]
    annotations: list[list[dict[str, Any]] | None]
    extras: dict[str, Any]
    content_hash: str


def snapshot(session: Session, tenant_id: str, dataset_id: str) -> DatasetSnapshot:
    dataset = get_dataset(session, tenant_id, dataset_id)
    rows = session.execute(
        select(Example.text, Example.label, Example.annotations)
        .where(Example.dataset_id == dataset_id)
        .order_by(Example.id)
    ).all()
    texts = [r[0] or "" for r in rows]
    labels = [r[1] or "" for r in rows]
    h = hashlib.sha256()
    for t, lab, ann in rows:
        h.update(json.dumps([t, lab, ann], sort_keys=True).encode())
    return DatasetSnapshot(
        dataset_id=dataset_id,
        type=dataset.type,
        texts=texts,
        labels=labels,
        annotations=[r[2] for r in rows],
        extras=dataset.extras or {},
        content_hash=h.hexdigest(),
    )
