"""Datasets: upload (multipart file or JSON), read, page through and search examples, append,
edit or delete one, an example's image or thumbnail, the label distribution chart, delete. The
work is done by ``bot_gateway.services.datasets``."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from bot_gateway.charts import CHART_RESPONSES, DEFAULT_MAX_LABELS, MaxLabels, chart_response
from bot_gateway.deps import Gateway, GatewayDep, SessionDep, TrainDep
from bot_gateway.requests import check_length, form_file, read_form, read_limited
from bot_gateway.schemas import (
    DatasetCreate,
    DatasetPublic,
    ExamplePage,
    ExamplePublic,
    ExamplesAdded,
    ExampleUpdate,
    RowNumber,
)
from bot_gateway.services import datasets as datasets_service
from bot_gateway.services import insight
from core.errors import InvalidInput
from core.plots import parse_format
from training.datasets import service
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
    dataset, background = await datasets_service.create_dataset(
        gateway, principal.tenant_id, fields=fields, data=data, filename=filename
    )
    if background:
        response.status_code = 202
    return dataset


@router.get("", response_model=list[DatasetPublic])
def list_datasets(principal: TrainDep, session: SessionDep) -> list[DatasetPublic]:
    return [DatasetPublic.of(d) for d in service.list_datasets(session, principal.tenant_id)]


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, principal: TrainDep, session: SessionDep) -> DatasetPublic:
    return DatasetPublic.of(service.get_dataset(session, principal.tenant_id, dataset_id))


@router.get("/{dataset_id}/plots/labels.{fmt}", response_class=Response, responses=CHART_RESPONSES)
def label_distribution_plot(
    dataset_id: str,
    fmt: str,
    principal: TrainDep,
    gateway: GatewayDep,
    max_labels: MaxLabels = DEFAULT_MAX_LABELS,
) -> Response:
    """The dataset's label distribution (examples per label) as an SVG or PNG bar chart."""
    chart_format = parse_format(fmt)
    data = insight.dataset_plot(
        gateway, principal.tenant_id, dataset_id, chart_format, max_labels=max_labels
    )
    return chart_response(data, chart_format)


@router.get("/{dataset_id}/examples", response_model=ExamplePage)
def list_examples(
    dataset_id: str,
    principal: TrainDep,
    session: SessionDep,
    offset: RowNumber = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    label: str | None = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="only examples whose text (or file name) holds this"),
    ] = None,
) -> ExamplePage:
    """A page of the dataset's examples in import order, of one ``label`` and/or holding
    ``q`` (any case)."""
    total, page = service.list_examples(
        session, principal.tenant_id, dataset_id, offset=offset, limit=limit, label=label, q=q
    )
    return ExamplePage(
        total=total, offset=offset, limit=limit, examples=[ExamplePublic.of(e) for e in page]
    )


@router.post("/{dataset_id}/examples", status_code=201, response_model=ExamplesAdded)
async def add_examples(
    dataset_id: str, request: Request, principal: TrainDep, gateway: GatewayDep
) -> ExamplesAdded:
    """Append examples: a JSON list of ``{text, label}`` or a file (multipart ``file``); image
    datasets take a multipart ``file`` (an image, or a zip) with ``label``, ``labels`` or
    ``boxes``."""
    tenant_id = principal.tenant_id
    kind = datasets_service.dataset_type(gateway, tenant_id, dataset_id)
    content_type = request.headers.get("content-type", "")
    if get_dataset_type(kind).modality == "image":
        if not content_type.startswith("multipart/form-data"):
            raise InvalidInput(
                "image datasets take examples as a multipart form: `file` (an image, or a zip) "
                "and `label`, `labels` or `boxes`"
            )
        fields, data, filename = await _upload(request, gateway)
        return await datasets_service.add_images(
            gateway, tenant_id, dataset_id, kind, fields=fields, data=data, filename=filename
        )
    if content_type.startswith("application/json"):
        check_length(request, gateway.settings.limits.max_upload_bytes)
        return await datasets_service.add_text_examples(
            gateway, tenant_id, dataset_id, kind, json_body=await request.body()
        )
    file = await _upload(request, gateway)
    return await datasets_service.add_text_examples(gateway, tenant_id, dataset_id, kind, file=file)


@router.get(
    "/{dataset_id}/examples/{example_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/*": {}}, "description": "the image as uploaded"}},
)
def example_image(
    dataset_id: str,
    example_id: RowNumber,
    principal: TrainDep,
    gateway: GatewayDep,
    size: Annotated[
        int | None,
        Query(
            ge=datasets_service.THUMBNAIL_SIZES[0],
            le=datasets_service.THUMBNAIL_SIZES[1],
            description="a JPEG thumbnail whose longest side is this many pixels",
        ),
    ] = None,
) -> Response:
    """The image of an image example, as it was uploaded; with ``size``, a thumbnail."""
    data, media_type = datasets_service.example_image(
        gateway, principal.tenant_id, dataset_id, example_id, size
    )
    return Response(
        data,
        media_type=media_type,
        headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )


@router.patch("/{dataset_id}/examples/{example_id}", response_model=ExamplePublic)
def update_example(
    dataset_id: str,
    example_id: RowNumber,
    body: ExampleUpdate,
    principal: TrainDep,
    gateway: GatewayDep,
) -> ExamplePublic:
    """Edit one example: ``label`` or ``text`` (and ``entities``) of a text example; ``label``,
    ``labels`` or ``boxes`` of an image example. 409 when the dataset already has the result."""
    return datasets_service.update_example(
        gateway, principal.tenant_id, dataset_id, example_id, body
    )


@router.delete("/{dataset_id}/examples/{example_id}", status_code=204, response_class=Response)
def delete_example(
    dataset_id: str, example_id: RowNumber, principal: TrainDep, gateway: GatewayDep
) -> Response:
    """Delete one example; the dataset's counts follow."""
    datasets_service.delete_example(gateway, principal.tenant_id, dataset_id, example_id)
    return Response(status_code=204)


@router.delete("/{dataset_id}", status_code=204, response_class=Response)
def delete_dataset(dataset_id: str, principal: TrainDep, gateway: GatewayDep) -> Response:
    datasets_service.delete_dataset(gateway, principal.tenant_id, dataset_id)
    return Response(status_code=204)
