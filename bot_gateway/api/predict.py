"""Prediction: ``POST /v1/models/{id_or_alias}/predict`` (``text`` or ``texts``, or images),
``POST /v1/ocr``, and the joint intent + entities parse in Rasa's shape:
``POST /v1/models/{id_or_alias}/parse`` and the Rasa-compatible ``POST /model/parse`` (the
tenant's ``production`` model). The work is done by ``bot_gateway.services.predictions``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from bot_gateway.deps import GatewayDep, PredictDep, bearer
from bot_gateway.openapi import REMOTE_FAILED
from bot_gateway.requests import read_predict_request
from bot_gateway.schemas import ParseRequest, ParseResponse, PredictRequest, PredictResponse
from bot_gateway.services import predictions

router = APIRouter(prefix="/models", tags=["predict"])
rasa_router = APIRouter(tags=["rasa compatibility"])

RASA_MODEL_ALIAS = "production"


PREDICT_BODY: dict[str, Any] = {
    "requestBody": {
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                        },
                        "num_results": {"type": "integer"},
                        "engine": {"type": "string"},
                        "task": {"type": "string"},
                        "min_score": {"type": "number"},
                    },
                }
            },
        },
        "required": True,
    }
}
"""The request body of predict and /v1/ocr: JSON or multipart (documented by hand, since the
route reads either)."""


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=PREDICT_BODY,
    responses=REMOTE_FAILED,
)
async def predict(
    model_id: str, request: Request, principal: PredictDep, gateway: GatewayDep
) -> PredictResponse:
    """Text models: top ``num_results`` labels with probabilities for ``text`` or up to 64
    ``texts``; intent models also say whether each text is ``out_of_scope``; entity and joint
    models give ``entities``. Image models: images as multipart ``file`` fields, base64
    ``image``/``images``, or ``url``/``urls`` where the operator allows it."""
    body, files = await read_predict_request(request, gateway.settings.limits)
    return await predictions.predict(gateway, principal, model_id, body, files)


@router.post("/{model_id}/parse", response_model=ParseResponse, responses=REMOTE_FAILED)
async def parse(
    model_id: str, body: ParseRequest, principal: PredictDep, gateway: GatewayDep
) -> ParseResponse:
    """Intent and entities of one text, in Rasa's ``/model/parse`` shape."""
    return await predictions.parse_text(gateway, principal, model_id, body)


@rasa_router.post("/model/parse", response_model=ParseResponse, responses=REMOTE_FAILED)
async def rasa_parse(request: Request, body: ParseRequest, gateway: GatewayDep) -> ParseResponse:
    """Rasa's ``POST /model/parse`` on the tenant's ``production`` model. Authenticates with
    ``Authorization: Bearer <key>`` or, as Rasa's token auth does, ``?token=<key>``."""
    principal = await gateway.lookups.principal(
        bearer(request) or request.query_params.get("token")
    )
    await gateway.admission.admit(request, principal)
    principal.require("predict")
    return await predictions.parse_text(gateway, principal, RASA_MODEL_ALIAS, body)


ocr_router = APIRouter(tags=["predict"])


@ocr_router.post(
    "/ocr",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=PREDICT_BODY,
)
async def ocr(request: Request, principal: PredictDep, gateway: GatewayDep) -> PredictResponse:
    """Read the text in images: the shortcut for ``prebuilt-ocr`` (options ``engine``: auto,
    the default, rapidocr or tesseract; ``task``: contact adds the entities found in the
    text). Each line says which engine read it."""
    body, files = await read_predict_request(request, gateway.settings.limits)
    return await predictions.predict_images(gateway, principal, "prebuilt-ocr", body, files)
