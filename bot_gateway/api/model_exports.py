"""Model exports: ``GET /v1/models/{id}/export?format=onnx``, a succeeded model as a zip that
runs with ONNX Runtime alone (``bot_gateway.services.exports``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from bot_gateway.deps import GatewayDep, PredictDep

router = APIRouter(prefix="/models", tags=["models"])

EXPORT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        "description": "the export: `model.onnx`, `labels.json`, `preprocessing.json`, the "
        "tokenizer (text models), `README.md`, `model_card.md`",
        "headers": {
            "Content-Disposition": {
                "description": "attachment; the file name",
                "schema": {"type": "string"},
            }
        },
    },
    409: {
        "description": "the model has not succeeded (yet): `not_ready`",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}


@router.get("/{model_id}/export", response_class=StreamingResponse, responses=EXPORT_RESPONSES)
def export_model(
    model_id: str,
    principal: PredictDep,
    gateway: GatewayDep,
    format: Annotated[
        Literal["onnx"], Query(description="the export format: `onnx` (the only one)")
    ] = "onnx",
) -> StreamingResponse:
    """A succeeded intent or image-classification model (single or multi-label) as a zip that
    runs with ONNX Runtime alone: one graph from token ids or pixels to the probabilities this
    server returns (the encoder or image network and the head together), the labels in output
    order with the out-of-scope threshold or per-label thresholds, the preprocessing it
    expects, a README with a Python snippet, and the model card. Entity, detection, OCR,
    built-in and remote models cannot be exported (422). The first export of a model builds
    it (seconds); later ones are sent from the cache. While the server builds as many exports
    as it may at once, another build is 429 with Retry-After."""
    export = gateway.exports.export(gateway.engine, principal.tenant_id, model_id, format)
    return StreamingResponse(
        export.chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Content-Length": str(export.size),
            "Cache-Control": "private",
        },
    )
