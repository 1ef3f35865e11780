"""Datasets: upload (multipart file or JSON), read, page through examples, append, delete."""

from __future__ import annotations

import json
import mimetypes
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from bot_gateway.api.forms import check_length, form_file, read_form, read_limited
from bot_gateway.deps import Gateway, GatewayDep, SessionDep, TrainDep
from bot_gateway.schemas import (
    DatasetCreate,
    DatasetPublic,
    ExamplePage,
    ExamplePublic,
    ExamplesAdded,
    RowNumber,
)
from core.db import session_scope
from core.documents import check_json_depth
from core.errors import InvalidInput, NotFound, ParleyError
from core.logging import log_event
from training.datasets import service
from training.datasets.image_import import ImageExample, parse_image_archive, single_image
from training.datasets.importers import decode_text, pick_importer
from training.datasets.types import get_dataset_type

router = APIRouter(prefix="/datasets", tags=["datasets"])


async def _upload(request: Request, gateway: Gateway) -> tuple[dict[str, str], bytes, str | None]:
    """(form fields, file bytes, file name) of a multipart upload."""
    limit = gateway.settings.limits.max_upload_bytes
    form = await read_form(request, limit=limit)
    upload = form_file(form, "file", "the dataset")
    data = await read_limited(upload, limit)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return fields, data, upload.filename


@router.post(
    "",
    status_code=201,
    response_model=DatasetPublic,
    responses={202: {"description": "large file: importing in the background"}},
)
async def create_dataset(
    request: Request, response: Response, principal: TrainDep, gateway: GatewayDep
) -> DatasetPublic:
    """Create a dataset from a file (multipart: ``name``, ``type``, ``file``[, ``format``]) or
    from JSON ``{name, type, examples: [{text, label}]}``."""
    if request.headers.get("content-type", "").startswith("application/json"):
        check_length(request, gateway.settings.limits.max_upload_bytes)
        try:
            body = DatasetCreate.model_validate_json(await request.body())
        except ValueError as e:
            raise InvalidInput(f"invalid JSON body: {e}") from e
        rows = [ex.model_dump(exclude_none=True) for ex in body.examples]
        data = "\n".join(json.dumps(r) for r in rows).encode()
        fields = {"name": body.name, "type": body.type, "format": "jsonl"}
        filename: str | None = f"{body.name}.jsonl"
    else:
        fields, data, filename = await _upload(request, gateway)
    dataset_type = fields.get("type", "").strip()
    if not dataset_type:
        raise InvalidInput("missing form field `type` (for example text-intent)")

    def create() -> str:
        with session_scope(gateway.engine) as session:
            dataset = service.create_dataset(
                session,
                gateway.store,
                tenant_id=principal.tenant_id,
                name=fields.get("name", ""),
                dataset_type=dataset_type,
                filename=filename,
                data=data,
                fmt=fields.get("format") or None,
            )
            return dataset.id

    dataset_id = await run_in_threadpool(create)
    if len(data) > gateway.settings.limits.sync_import_bytes:
        gateway.imports.submit(import_in_background, gateway, dataset_id)
        response.status_code = 202
    else:
        try:
            await run_in_threadpool(
                service.run_import, gateway.engine, gateway.store, dataset_id, gateway.limits
            )
        except ParleyError:
            await run_in_threadpool(_discard, gateway, principal.tenant_id, dataset_id)
            raise
    with session_scope(gateway.engine) as session:
        return DatasetPublic.of(service.get_dataset(session, principal.tenant_id, dataset_id))


def import_in_background(gateway: Gateway, dataset_id: str) -> None:
    try:
        service.run_import(gateway.engine, gateway.store, dataset_id, gateway.limits)
    except ParleyError:
        pass  # recorded on the dataset as failed + status_message
    except Exception as e:  # noqa: BLE001
        log_event("dataset.import_crashed", dataset=dataset_id, error=repr(e))


def _discard(gateway: Gateway, tenant_id: str, dataset_id: str) -> None:
    with session_scope(gateway.engine) as session:
        service.delete_dataset(session, gateway.store, tenant_id, dataset_id)


@router.get("", response_model=list[DatasetPublic])
def list_datasets(principal: TrainDep, session: SessionDep) -> list[DatasetPublic]:
    return [DatasetPublic.of(d) for d in service.list_datasets(session, principal.tenant_id)]


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, principal: TrainDep, session: SessionDep) -> DatasetPublic:
    return DatasetPublic.of(service.get_dataset(session, principal.tenant_id, dataset_id))


@router.get("/{dataset_id}/examples", response_model=ExamplePage)
def list_examples(
    dataset_id: str,
    principal: TrainDep,
    session: SessionDep,
    offset: RowNumber = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    label: str | None = None,
) -> ExamplePage:
    total, page = service.list_examples(
        session, principal.tenant_id, dataset_id, offset=offset, limit=limit, label=label
    )
    return ExamplePage(
        total=total, offset=offset, limit=limit, examples=[ExamplePublic.of(e) for e in page]
    )


@router.post("/{dataset_id}/examples", status_code=201, response_model=ExamplesAdded)
async def add_examples(
    dataset_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ExamplesAdded:
    """Append examples: a JSON list of ``{text, label}`` or a file (multipart ``file``)."""
    with session_scope(gateway.engine) as session:
        dataset = service.get_dataset(session, principal.tenant_id, dataset_id)
        dataset_type = dataset.type
    if get_dataset_type(dataset_type).modality == "image":
        return await _add_images(request, principal.tenant_id, dataset_id, dataset_type, gateway)
    if request.headers.get("content-type", "").startswith("application/json"):
        check_length(request, gateway.settings.limits.max_upload_bytes)
        raw = await request.body()
        check_json_depth(raw, gateway.settings.limits.max_document_depth, what="the JSON body")
        try:
            items = json.loads(raw)
        except ValueError as e:  # malformed, not UTF-8, or an integer of over 4300 digits
            raise InvalidInput(f"malformed JSON: {e}") from e
        if isinstance(items, dict) and "examples" in items:
            items = items["examples"]
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise InvalidInput('send a JSON list of {"text": ..., "label": ...} objects')
        parsed = pick_importer(None, "json", dataset_type).parse(json.dumps(items), dataset_type)
    else:
        fields, data, filename = await _upload(request, gateway)
        importer = pick_importer(filename, fields.get("format") or None, dataset_type)
        parsed = await run_in_threadpool(importer.parse, decode_text(data), dataset_type)

    def append() -> ExamplesAdded:
        with session_scope(gateway.engine) as session:
            ds, added, dups = service.append_examples(
                session, principal.tenant_id, dataset_id, parsed, gateway.limits
            )
            return ExamplesAdded(added=added, duplicates=dups, dataset=DatasetPublic.of(ds))

    return await run_in_threadpool(append)


async def _add_images(
    request: Request, tenant_id: str, dataset_id: str, dataset_type: str, gateway: Gateway
) -> ExamplesAdded:
    """Multipart ``file``: one image with ``label`` (image), ``labels`` (image-multi-label: a
    JSON list or ``a|b``) or ``boxes`` (image-detection: a JSON list), or a zip of many in the
    dataset's layout; ``source=feedback`` marks a corrected prediction."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput(
            "image datasets take examples as a multipart form: `file` (an image, or a zip) and "
            "`label`, `labels` or `boxes`"
        )
    fields, data, filename = await _upload(request, gateway)
    source = fields.get("source", "api").strip() or "api"
    limits = gateway.limits
    depth = gateway.settings.limits.max_document_depth
    name = filename or "image"

    def parse() -> list[ImageExample]:
        if name.lower().endswith(".zip"):
            return parse_image_archive(data, dataset_type, limits=service.image_limits(limits))
        return [
            single_image(
                name,
                data,
                dataset_type,
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


@router.get(
    "/{dataset_id}/examples/{example_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the image as uploaded"}},
)
def example_image(
    dataset_id: str, example_id: RowNumber, principal: TrainDep, gateway: GatewayDep
) -> Response:
    """The image of an image example, as it was uploaded."""
    with session_scope(gateway.engine) as session:
        example = service.get_example(session, principal.tenant_id, dataset_id, example_id)
        key = example.blob_key
    if key is None:
        raise NotFound(f"example {example_id} has no image (it is a text example)")
    return Response(
        gateway.store.get_bytes(key),
        media_type=mimetypes.guess_type(key)[0] or "application/octet-stream",
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: str, principal: TrainDep, gateway: GatewayDep) -> Response:
    with session_scope(gateway.engine) as session:
        service.delete_dataset(session, gateway.store, principal.tenant_id, dataset_id)
    return Response(status_code=204)
