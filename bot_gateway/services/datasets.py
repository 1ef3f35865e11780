"""Datasets for the gateway: create one from an upload (imported now, or in the background when
large), append text or image examples, edit or delete one, read an example's image (or a
thumbnail of it), delete. The importers and the SQL are ``training.datasets``'; this module runs
them off the event loop with the gateway's store and limits."""

from __future__ import annotations

import io
import json
import mimetypes
import re
from typing import Any

from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import Gateway
from bot_gateway.schemas import DatasetPublic, ExamplePublic, ExamplesAdded, ExampleUpdate
from core.db import session_scope
from core.documents import check_json_depth
from core.errors import InvalidInput, NotFound, ParleyError
from core.images import decode_image
from core.logging import log_event
from core.lru import Lru
from core.storage import ArtifactStore
from training.datasets import service
from training.datasets.image_import import ImageExample, parse_image_archive, single_image
from training.datasets.importers import decode_text, pick_importer

__all__ = [
    "add_images",
    "add_text_examples",
    "create_dataset",
    "dataset_type",
    "delete_dataset",
    "delete_example",
    "example_image",
    "import_in_background",
    "update_example",
]

THUMBNAIL_SIZES = (32, 1024)
"""The smallest and largest ``size`` (longest side, pixels) of an example's thumbnail."""
CACHED_THUMBNAIL_SIZE = 400
"""Thumbnails up to this size are kept in memory (the most recent 512): a page of a dataset's
grid is drawn from memory the second time."""


async def create_dataset(
    gateway: Gateway,
    tenant_id: str,
    *,
    fields: dict[str, str],
    data: bytes,
    filename: str | None,
) -> tuple[DatasetPublic, bool]:
    """A new dataset from a file and its form fields (``name``, ``type``, ``format``), and
    whether it is still importing in the background (a file over ``sync_import_bytes``)."""
    kind = fields.get("type", "").strip()
    if not kind:
        raise InvalidInput("missing form field `type` (for example text-intent)")

    def create() -> str:
        with session_scope(gateway.engine) as session:
            dataset = service.create_dataset(
                session,
                gateway.store,
                tenant_id=tenant_id,
                name=fields.get("name", ""),
                dataset_type=kind,
                filename=filename,
                data=data,
                fmt=fields.get("format") or None,
            )
            return dataset.id

    dataset_id = await run_in_threadpool(create)
    background = len(data) > gateway.settings.limits.sync_import_bytes
    if background:
        gateway.imports.submit(import_in_background, gateway, dataset_id)
    else:
        try:
            await run_in_threadpool(
                service.run_import, gateway.engine, gateway.store, dataset_id, gateway.limits
            )
        except ParleyError:
            await run_in_threadpool(_discard, gateway, tenant_id, dataset_id)
            raise
    with session_scope(gateway.engine) as session:
        return DatasetPublic.of(service.get_dataset(session, tenant_id, dataset_id)), background


def import_in_background(gateway: Gateway, dataset_id: str) -> None:
    """Import a stored dataset file (in the gateway's import thread); failures are recorded on
    the dataset (``failed`` + ``status_message``)."""
    try:
        service.run_import(gateway.engine, gateway.store, dataset_id, gateway.limits)
    except ParleyError:
        pass  # recorded on the dataset as failed + status_message
    except Exception as e:  # noqa: BLE001
        log_event("dataset.import_crashed", dataset=dataset_id, error=repr(e))


def _discard(gateway: Gateway, tenant_id: str, dataset_id: str) -> None:
    with session_scope(gateway.engine) as session:
        service.delete_dataset(session, gateway.store, tenant_id, dataset_id)


def dataset_type(gateway: Gateway, tenant_id: str, dataset_id: str) -> str:
    """The type of a tenant's dataset (``NotFound`` when it has none of that id)."""
    with session_scope(gateway.engine) as session:
        return service.get_dataset(session, tenant_id, dataset_id).type


async def add_text_examples(
    gateway: Gateway,
    tenant_id: str,
    dataset_id: str,
    kind: str,
    *,
    json_body: bytes | None = None,
    file: tuple[dict[str, str], bytes, str | None] | None = None,
) -> ExamplesAdded:
    """Append examples sent as a JSON list of ``{text, label}`` (or ``{"examples": [...]}``),
    or as a file ``(form fields, bytes, file name)`` in any format the importers read."""
    if json_body is not None:
        check_json_depth(
            json_body, gateway.settings.limits.max_document_depth, what="the JSON body"
        )
        try:
            items = json.loads(json_body)
        except ValueError as e:  # malformed, not UTF-8, or an integer of over 4300 digits
            raise InvalidInput(f"malformed JSON: {e}") from e
        if isinstance(items, dict) and "examples" in items:
            items = items["examples"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InvalidInput('send a JSON list of {"text": ..., "label": ...} objects')
        parsed = pick_importer(None, "json", kind).parse(json.dumps(items), kind)
    elif file is not None:
        fields, data, filename = file
        importer = pick_importer(filename, fields.get("format") or None, kind)
        parsed = await run_in_threadpool(importer.parse, decode_text(data), kind)
    else:
        raise InvalidInput("send examples as JSON or as a file")

    def append() -> ExamplesAdded:
        with session_scope(gateway.engine) as session:
            ds, added, dups = service.append_examples(
                session, tenant_id, dataset_id, parsed, gateway.limits
            )
            return ExamplesAdded(added=added, duplicates=dups, dataset=DatasetPublic.of(ds))

    return await run_in_threadpool(append)


async def add_images(
    gateway: Gateway,
    tenant_id: str,
    dataset_id: str,
    kind: str,
    *,
    fields: dict[str, str],
    data: bytes,
    filename: str | None,
) -> ExamplesAdded:
    """One image with ``label`` (image), ``labels`` (image-multi-label: a JSON list or
    ``a|b``) or ``boxes`` (image-detection: a JSON list), or a zip of many in the dataset's
    layout; ``source=feedback`` marks a corrected prediction."""
    source = fields.get("source", "api").strip() or "api"
    limits = gateway.limits
    depth = gateway.settings.limits.max_document_depth
    name = filename or "image"

    def parse() -> list[ImageExample]:
        if name.lower().endswith(".zip"):
            return parse_image_archive(data, kind, limits=service.image_limits(limits))
        return [
            single_image(
                name,
                data,
                kind,
                label=fields.get("label"),
                labels=_json_or_split(fields.get("labels"), "labels", max_depth=depth),
                boxes=_json_or_split(fields.get("boxes"), "boxes", max_depth=depth, split=False),
                max_pixels=limits.max_image_pixels,
            )
        ]

    images = await run_in_threadpool(parse)

    def append() -> ExamplesAdded:
        with session_scope(gateway.engine) as session:
            ds, added, dups = service.append_images(
                session, gateway.store, tenant_id, dataset_id, images, limits, source=source
            )
            return ExamplesAdded(added=added, duplicates=dups, dataset=DatasetPublic.of(ds))

    return await run_in_threadpool(append)


def _json_or_split(
    value: str | None, field: str, *, max_depth: int, split: bool = True
) -> list[Any] | None:
    """A form field holding a JSON list, or (``split``) names joined by ``|`` or commas."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("["):
        check_json_depth(text, max_depth, what=f"`{field}`")
        try:
            parsed = json.loads(text)
        except ValueError as e:  # malformed, or an integer of over 4300 digits
            raise InvalidInput(f"`{field}` is not valid JSON: {e}") from e
        if not isinstance(parsed, list):
            raise InvalidInput(f"`{field}` must be a JSON list")
        return parsed
    if not split:
        raise InvalidInput(f"`{field}` must be a JSON list")
    return [p for p in re.split(r"[|,]", text) if p.strip()]


def example_image(
    gateway: Gateway, tenant_id: str, dataset_id: str, example_id: int, size: int | None = None
) -> tuple[bytes, str]:
    """The bytes and media type of an image example, as it was uploaded; with ``size``, a JPEG
    thumbnail of it, upright, whose longest side is ``size`` pixels (or the image's own, when
    smaller)."""
    with session_scope(gateway.engine) as session:
        example = service.get_example(session, tenant_id, dataset_id, example_id)
        key = example.blob_key
    if key is None:
        raise NotFound(f"example {example_id} has no image (it is a text example)")
    if size is not None:
        low, high = THUMBNAIL_SIZES
        if not low <= size <= high:
            raise InvalidInput(f"size {size}: a thumbnail's longest side is {low} to {high} pixels")
        if size <= CACHED_THUMBNAIL_SIZE:
            thumbnail = _thumbnails.get_or_make(
                (key, size), lambda: _thumbnail(gateway.store, key, size)
            )
            return thumbnail, "image/jpeg"
        return _thumbnail(gateway.store, key, size), "image/jpeg"
    media_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
    return gateway.store.get_bytes(key), media_type


def _thumbnail(store: ArtifactStore, key: str, size: int) -> bytes:
    image = decode_image(store.get_bytes(key), name=key.rsplit("/", 1)[-1]).image
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


_thumbnails: Lru[tuple[str, int], bytes] = Lru(512)
"""The most recent thumbnails by (image key, size). An image's key names its content (a
sha256), so the thumbnail of a key never changes, whichever store holds it."""


def update_example(
    gateway: Gateway, tenant_id: str, dataset_id: str, example_id: int, body: ExampleUpdate
) -> ExamplePublic:
    """Edit one example (relabel, correct its text, its labels or boxes); the dataset's counts
    follow."""
    change = service.ExampleChange(**body.model_dump(exclude_unset=True))
    with session_scope(gateway.engine) as session:
        example = service.update_example(
            session, gateway.store, tenant_id, dataset_id, example_id, change, gateway.limits
        )
        return ExamplePublic.of(example)


def delete_example(gateway: Gateway, tenant_id: str, dataset_id: str, example_id: int) -> None:
    """Delete one example (its image too, when no other example shows it)."""
    with session_scope(gateway.engine) as session:
        service.delete_example(session, gateway.store, tenant_id, dataset_id, example_id)


def delete_dataset(gateway: Gateway, tenant_id: str, dataset_id: str) -> None:
    """Delete a dataset, its examples and their stored files."""
    with session_scope(gateway.engine) as session:
        service.delete_dataset(session, gateway.store, tenant_id, dataset_id)
