"""Prediction: ``POST /v1/models/{id_or_alias}/predict`` with ``text`` or ``texts``."""

from __future__ import annotations

from fastapi import APIRouter

from bot_gateway.deps import GatewayDep, PredictDep, SessionDep
from bot_gateway.schemas import Prediction, PredictRequest, PredictResponse
from bot_gateway.serving.cache import ModelRef
from core.errors import InvalidInput, NotReady
from training import registry

router = APIRouter(prefix="/models", tags=["predict"])

TIMEOUT_S = 30.0


@router.post(
    "/{model_id}/predict", response_model=PredictResponse, response_model_exclude_none=True
)
def predict(
    model_id: str,
    body: PredictRequest,
    principal: PredictDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> PredictResponse:
    """Top ``num_results`` labels with probabilities, for one text or up to 64."""
    limits = gateway.settings.limits
    if (body.text is None) == (body.texts is None):
        raise InvalidInput('send either "text" (one string) or "texts" (a list of strings)')
    texts = [body.text] if body.text is not None else list(body.texts or [])
    if not texts:
        raise InvalidInput('"texts" is empty; send 1 to 64 texts')
    if len(texts) > limits.max_batch_texts:
        raise InvalidInput(
            f'"texts" has {len(texts)} items; send at most {limits.max_batch_texts} per request'
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput("empty text" if body.text is not None else f"texts[{i}] is empty")
        if len(text) > limits.max_text_chars:
            raise InvalidInput(f"text is longer than {limits.max_text_chars} characters")
    model = registry.resolve(session, principal.tenant_id, model_id)
    if model.status != "succeeded":
        raise NotReady(
            f"model {model.id} is {model.status}; it can predict once it has succeeded",
            status=model.status,
        )
    ref = ModelRef(
        id=model.id,
        backend=model.backend,
        artifact_key=model.artifact_key or "",
        artifact_sha256=model.artifact_sha256 or "",
    )
    session.close()  # release the connection while the model works
    loaded = gateway.cache.get(ref)
    probs = gateway.batcher.submit(loaded, texts).result(timeout=TIMEOUT_S)
    k = min(body.num_results, len(loaded.labels))
    results = []
    for row in probs:
        top = row.argsort()[::-1][:k]
        results.append(
            [Prediction(label=loaded.labels[i], probability=round(float(row[i]), 6)) for i in top]
        )
    return PredictResponse(
        model_id=ref.id, predictions=results[0] if body.text is not None else results
    )
