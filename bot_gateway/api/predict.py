"""Prediction: ``POST /v1/models/{id_or_alias}/predict`` with ``text`` or ``texts``.

The hot path: a cached principal and model look-up, a cached loaded model, and the
micro-batcher's future awaited on the event loop — no thread hop when everything is warm.
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import GatewayDep, PredictDep
from bot_gateway.schemas import EntityPublic, Prediction, PredictRequest, PredictResponse
from bot_gateway.serving.cache import ModelRef
from bot_gateway.serving.lookup import BUILTIN
from core.errors import InvalidInput, NotReady
from training.metrics import OUT_OF_SCOPE

router = APIRouter(prefix="/models", tags=["predict"])

TIMEOUT_S = 30.0


@router.post(
    "/{model_id}/predict", response_model=PredictResponse, response_model_exclude_none=True
)
async def predict(
    model_id: str, body: PredictRequest, principal: PredictDep, gateway: GatewayDep
) -> PredictResponse:
    """Top ``num_results`` labels with probabilities, for one text or up to 64; intent models
    also say whether each text is ``out_of_scope``."""
    texts = _texts(
        body, gateway.settings.limits.max_batch_texts, gateway.settings.limits.max_text_chars
    )
    info = await gateway.lookups.model(principal.tenant_id, model_id)
    if info.status != "succeeded":
        raise NotReady(
            f"model {info.id} is {info.status}; it can predict once it has succeeded",
            status=info.status,
        )
    if info.backend == BUILTIN:
        loaded = await run_in_threadpool(gateway.builtin, info.id)
    else:
        ref = ModelRef(
            id=info.id,
            backend=info.backend,
            artifact_key=info.artifact_key,
            artifact_sha256=info.artifact_sha256,
        )
        loaded = gateway.cache.peek(ref) or await run_in_threadpool(gateway.cache.get, ref)
    if info.task == "entities":
        found = await run_in_threadpool(loaded.extract, texts)
        entities = [[EntityPublic(**e.to_dict()) for e in row] for row in found]
        return PredictResponse(
            model_id=info.id, entities=entities[0] if body.text is not None else entities
        )
    probs = await asyncio.wait_for(
        asyncio.wrap_future(gateway.batcher.submit(loaded, texts)), TIMEOUT_S
    )
    results, flags = [], []
    for row in probs:
        predictions, oos = rank(row, loaded.labels, body.num_results, info.out_of_scope_threshold)
        results.append(predictions)
        flags.append(oos)
    single = body.text is not None
    return PredictResponse(
        model_id=info.id,
        predictions=results[0] if single else results,
        out_of_scope=(flags[0] if single else flags) if info.task == "intent" else None,
    )


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
            raise InvalidInput(f"text is longer than {max_chars} characters")
    return texts
