"""Prediction: ``POST /v1/models/{id_or_alias}/predict`` (``text`` or ``texts``), and the joint
intent + entities parse in Rasa's shape: ``POST /v1/models/{id_or_alias}/parse`` and the
Rasa-compatible ``POST /model/parse`` (the tenant's ``production`` model).

The hot path: a cached principal and model look-up, a cached loaded model, and the
micro-batcher's future awaited on the event loop — no thread hop when everything is warm.
Entity extraction runs in the thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from bot_gateway.api.predict_images import (
    IMAGE_TASKS,
    load_ready,
    predict_images,
    read_predict_request,
)
from bot_gateway.deps import Gateway, GatewayDep, PredictDep, bearer
from bot_gateway.schemas import (
    EntityPublic,
    IntentPublic,
    ParseRequest,
    ParseResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
)
from bot_gateway.serving.lookup import ModelInfo
from core.errors import InvalidInput
from core.tenants import Principal
from training.metrics import OUT_OF_SCOPE

router = APIRouter(prefix="/models", tags=["predict"])
rasa_router = APIRouter(tags=["rasa compatibility"])

TIMEOUT_S = 30.0
RASA_MODEL_ALIAS = "production"


@dataclass
class Outcome:
    info: ModelInfo
    labels: list[str] | None
    probs: np.ndarray | None  # classifiers: one row per text
    entities: list[list[EntityPublic]] | None  # entity models and joint intent models


async def run_model(
    gateway: Gateway,
    principal: Principal,
    model_id: str,
    texts: list[str],
    entity_labels: list[str] | None = None,
) -> Outcome:
    info, loaded = await load_ready(gateway, principal, model_id)
    if info.task in IMAGE_TASKS:
        raise InvalidInput(
            f"model {info.id} is a {info.task} model: send images (multipart `file`, base64 "
            "`image`/`images`), not text"
        )
    extractor = loaded if info.task == "entities" else getattr(loaded, "entity_model", None)
    if entity_labels is not None:
        _check_entity_labels(info.id, extractor, entity_labels)
    entities = None
    if extractor is not None:
        found = await run_in_threadpool(extractor.extract, texts)
        entities = [
            [
                EntityPublic(**e.to_dict())
                for e in row
                if entity_labels is None or e.entity in entity_labels
            ]
            for row in found
        ]
    probs = None
    if info.task != "entities":
        probs = await asyncio.wait_for(
            asyncio.wrap_future(gateway.batcher.submit(loaded, texts)), TIMEOUT_S
        )
    gateway.usage.predicted(
        principal.tenant_id, info.id, task=info.task, backend=info.backend, count=len(texts)
    )
    return Outcome(info, None if probs is None else list(loaded.labels), probs, entities)


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
)
async def predict(
    model_id: str, request: Request, principal: PredictDep, gateway: GatewayDep
) -> PredictResponse:
    """Text models: top ``num_results`` labels with probabilities for ``text`` or up to 64
    ``texts``; intent models also say whether each text is ``out_of_scope``; entity and joint
    models give ``entities``. Image models: images as multipart ``file`` fields, base64
    ``image``/``images``, or ``url``/``urls`` where the operator allows it."""
    body, files = await read_predict_request(request, gateway)
    if files or body.image_count():
        return await predict_images(gateway, principal, model_id, body, files)
    texts = _texts(
        body, gateway.settings.limits.max_batch_texts, gateway.settings.limits.max_text_chars
    )
    out = await run_model(gateway, principal, model_id, texts, body.entity_labels)
    single = body.text is not None
    entities = None
    if out.entities is not None:
        entities = out.entities[0] if single else out.entities
    if out.probs is None or out.labels is None:
        return PredictResponse(model_id=out.info.id, entities=entities)
    ranked = [
        rank(row, out.labels, body.num_results, out.info.out_of_scope_threshold)
        for row in out.probs
    ]
    results, flags = [r[0] for r in ranked], [r[1] for r in ranked]
    return PredictResponse(
        model_id=out.info.id,
        predictions=results[0] if single else results,
        out_of_scope=(flags[0] if single else flags) if out.info.task == "intent" else None,
        entities=entities,
    )


async def parse_text(
    gateway: Gateway, principal: Principal, model_id: str, body: ParseRequest
) -> ParseResponse:
    texts = _texts(PredictRequest(text=body.text), 1, gateway.settings.limits.max_text_chars)
    out = await run_model(gateway, principal, model_id, texts, body.entity_labels)
    if out.probs is None or out.labels is None:
        raise InvalidInput(
            f"model {out.info.id} extracts entities only; parse needs an intent "
            "model (train one on a text-intent dataset)"
        )
    ranking, oos = rank(out.probs[0], out.labels, 10, out.info.out_of_scope_threshold)
    intents = [IntentPublic(name=p.label, confidence=p.probability) for p in ranking]
    return ParseResponse(
        text=body.text,
        intent=intents[0],
        intent_ranking=intents,
        entities=(out.entities or [[]])[0],
        out_of_scope=oos,
        model_id=out.info.id,
    )


@router.post("/{model_id}/parse", response_model=ParseResponse)
async def parse(
    model_id: str, body: ParseRequest, principal: PredictDep, gateway: GatewayDep
) -> ParseResponse:
    """Intent and entities of one text, in Rasa's ``/model/parse`` shape."""
    return await parse_text(gateway, principal, model_id, body)


@rasa_router.post("/model/parse", response_model=ParseResponse)
async def rasa_parse(request: Request, body: ParseRequest, gateway: GatewayDep) -> ParseResponse:
    """Rasa's ``POST /model/parse`` on the tenant's ``production`` model. Authenticates with
    ``Authorization: Bearer <key>`` or, as Rasa's token auth does, ``?token=<key>``."""
    principal = await gateway.lookups.principal(
        bearer(request) or request.query_params.get("token")
    )
    await gateway.admission.admit(request, principal)
    principal.require("predict")
    return await parse_text(gateway, principal, RASA_MODEL_ALIAS, body)


def rank(
    row: np.ndarray, labels: list[str], k: int, threshold: float | None
) -> tuple[list[Prediction], bool]:
    """The top ``k`` labels, and whether the input is out of scope.

    Under the threshold, ``out_of_scope`` goes first with probability 1 - top probability
    (the intents keep their own probabilities below it).
    """
    order = row.argsort()[::-1]
    top = float(row[order[0]])
    predictions = [
        Prediction(label=labels[i], probability=round(float(row[i]), 6)) for i in order[:k]
    ]
    if labels[order[0]] == OUT_OF_SCOPE:
        return predictions, True
    if threshold is not None and top < threshold:
        flagged = Prediction(label=OUT_OF_SCOPE, probability=round(1.0 - top, 6))
        rest = [p for p in predictions if p.label != OUT_OF_SCOPE]
        return [flagged, *rest][:k], True
    return predictions, False


def known_entity_labels(extractor: Any) -> set[str]:
    """The entity types a model can return: ``entity_types`` where the model has it (trained
    labels plus its Rasa regex and lookup names), else its ``labels``."""
    types = getattr(extractor, "entity_types", None)
    return set(types if types is not None else extractor.labels)


def _check_entity_labels(model_id: str, extractor: Any, wanted: list[str]) -> None:
    if extractor is None:
        raise InvalidInput(
            f"entity_labels: model {model_id} extracts no entities (train it on a dataset "
            "with entity annotations, or call prebuilt-entities)"
        )
    known = known_entity_labels(extractor)
    unknown = [label for label in wanted if label not in known]
    if unknown:
        raise InvalidInput(
            f"entity_labels: unknown entity type(s) {', '.join(map(repr, unknown))} for model "
            f"{model_id}; it knows {', '.join(sorted(known)) or 'none'}"
        )


def _texts(body: PredictRequest, max_texts: int, max_chars: int) -> list[str]:
    if (body.text is None) == (body.texts is None):
        raise InvalidInput('send either "text" (one string) or "texts" (a list of strings)')
    texts = [body.text] if body.text is not None else list(body.texts or [])
    if not texts:
        raise InvalidInput('"texts" is empty; send 1 to 64 texts')
    if len(texts) > max_texts:
        raise InvalidInput(f'"texts" has {len(texts)} items; send at most {max_texts} per request')
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput("empty text" if body.text is not None else f"texts[{i}] is empty")
        if len(text) > max_chars:
            field = "text" if body.text is not None else f"texts[{i}]"
            raise InvalidInput(
                f"{field} has {len(text)} characters; the limit is {max_chars} "
                "(PARLEY_LIMITS__MAX_TEXT_CHARS)"
            )
    return texts


ocr_router = APIRouter(tags=["predict"])


@ocr_router.post(
    "/ocr",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    openapi_extra=PREDICT_BODY,
)
async def ocr(request: Request, principal: PredictDep, gateway: GatewayDep) -> PredictResponse:
    """Read the text in images: the shortcut for ``prebuilt-ocr`` (options ``engine``:
    rapidocr or tesseract; ``task``: contact adds the entities found in the text)."""
    body, files = await read_predict_request(request, gateway)
    return await predict_images(gateway, principal, "prebuilt-ocr", body, files)
