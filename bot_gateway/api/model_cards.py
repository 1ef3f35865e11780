"""Model cards: ``GET /v1/models/{id}/card``, a model's card as Markdown (Hugging Face layout)
or, with ``Accept: application/json``, as JSON (``training.cards``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from bot_gateway.deps import GatewayDep, PredictDep, SessionDep
from core.backends import builtin_models
from training import registry
from training.cards import ModelCard, builtin_card, card_json, model_card, render_markdown

router = APIRouter(prefix="/models", tags=["models"])

MARKDOWN = "text/markdown; charset=utf-8"
JSON = "application/json"

CARD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the model card: Markdown by default (YAML front matter, then the "
        "sections of a Hugging Face model card), JSON with `Accept: application/json`",
        "content": {
            "text/markdown": {"schema": {"type": "string"}},
            JSON: {"schema": {"$ref": "#/components/schemas/ModelCard"}},
        },
    },
    409: {
        "description": "the model has not succeeded (yet): `not_ready`",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    },
}


def wants_json(accept: str | None) -> bool:
    """Whether an ``Accept`` header prefers JSON to Markdown (ties and no header: Markdown)."""
    best: dict[str, float] = {"markdown": 0.0, "json": 0.0}
    for part in (accept or "").split(","):
        media, *options = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        media = media.lower()
        if media in ("application/json", "application/*"):
            best["json"] = max(best["json"], quality)
        if media in ("text/markdown", "text/*"):
            best["markdown"] = max(best["markdown"], quality)
    return best["json"] > best["markdown"]


@router.get(
    "/{model_id}/card",
    response_class=Response,
    response_model=ModelCard,
    responses=CARD_RESPONSES,
)
def get_model_card(
    model_id: str,
    request: Request,
    principal: PredictDep,
    session: SessionDep,
    gateway: GatewayDep,
) -> Response:
    """A succeeded model's card (by id or alias; built-in models by name): dataset and label
    counts, backend and params, training time and hardware, held-out metrics with a per-label
    table, the out-of-scope threshold of intent models, intended use and limitations (labels
    with few examples, the weakest labels). Markdown in the Hugging Face model-card layout by
    default; the same card as JSON with ``Accept: application/json``. A model that has not
    succeeded is 409 ``not_ready``; remote and built-in models get a card of what Parley knows
    (no dataset, no evaluation)."""
    if model_id in builtin_models:
        card = builtin_card(model_id)
    else:
        card = model_card(session, registry.resolve(session, principal.tenant_id, model_id))
    headers = {"Cache-Control": "private", "Vary": "Accept"}
    if wants_json(request.headers.get("accept")):
        return Response(card_json(card), media_type=JSON, headers=headers)
    base_url = gateway.settings.public_url or str(request.base_url)
    return Response(render_markdown(card, base_url=base_url), media_type=MARKDOWN, headers=headers)
