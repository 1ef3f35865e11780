"""Prediction: text models (labels, out of scope, entities; the joint parse in Rasa's shape)
and image models (classification, detection, OCR), for the predict routes and the
conversation runtime.

The hot path: a cached principal and model look-up, a cached loaded model, and the
micro-batcher's future awaited on the event loop; no thread hop when everything is warm.
Entity extraction, image decoding, detectors and OCR run in the thread pool, never on the event
loop; classification heads (text and image) go through the micro-batcher (every tenant's image
head shares one Lite0 feature pass; identical images once). Remote models (served by the
tenant's own V2 server) are awaited over HTTP instead (``services.remote_models``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.concurrency import run_in_threadpool

from bot_gateway.deps import Gateway
from bot_gateway.schemas import (
    BoxPublic,
    EntityPublic,
    ImageInfo,
    ImagePrediction,
    ImageResult,
    IntentPublic,
    OcrLinePublic,
    ParseRequest,
    ParseResponse,
    Prediction,
    PredictRequest,
    PredictResponse,
)
from bot_gateway.serving.cache import ModelRef
from bot_gateway.serving.image_inputs import decode_base64, decode_inputs, fetch_url
from bot_gateway.serving.lookup import BUILTIN, ModelInfo
from core.errors import InvalidInput, NotReady
from core.evaluation import OUT_OF_SCOPE
from core.images import DecodedImage
from core.outbound import OutboundGuard
from core.remote_models import RemoteModel
from core.tenants import Principal
from nlu import sentiment

SENTIMENT = sentiment.PREBUILT_SENTIMENT.task

__all__ = [
    "IMAGE_TASKS",
    "Outcome",
    "known_entity_labels",
    "load_ready",
    "parse_text",
    "predict",
    "predict_images",
    "rank",
    "run_model",
]

IMAGE_TASKS = frozenset({"image-classification", "image-multi-label", "object-detection", "ocr"})
TEXT_TIMEOUT_S = 30.0
IMAGE_TIMEOUT_S = 60.0


async def load_ready(
    gateway: Gateway, principal: Principal, model_id: str
) -> tuple[ModelInfo, Any]:
    """A succeeded model's record and the loaded model (cached), or ``NotReady``."""
    info = await gateway.lookups.model(principal.tenant_id, model_id)
    if info.status != "succeeded":
        raise NotReady(
            f"model {info.id} is {info.status}; it can predict once it has succeeded",
            status=info.status,
        )
    if info.backend == BUILTIN:
        return info, await run_in_threadpool(gateway.builtin, info.id)
    if info.remote is not None:  # served by the tenant's own server (services.remote_models)
        return info, gateway.remote.model(info.id, info.task, info.remote)
    ref = ModelRef(
        id=info.id,
        backend=info.backend,
        artifact_key=info.artifact_key,
        artifact_sha256=info.artifact_sha256,
    )
    return info, gateway.cache.peek(ref) or await run_in_threadpool(gateway.cache.get, ref)


@dataclass
class Outcome:
    """A text model's raw answer: label probabilities and entities, one row per text."""

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
    """Run a ready text model on ``texts`` (entities restricted to ``entity_labels``)."""
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
    probs = labels = None
    if isinstance(loaded, RemoteModel):
        labels, probs = await gateway.remote.classify_texts(principal.tenant_id, loaded, texts)
    elif info.task != "entities":
        probs = await asyncio.wait_for(
            asyncio.wrap_future(gateway.batcher.submit(loaded, texts)), TEXT_TIMEOUT_S
        )
        labels = list(loaded.labels)
    gateway.usage.predicted(
        principal.tenant_id, info.id, task=info.task, backend=info.backend, count=len(texts)
    )
    await gateway.admission.predicted(principal.tenant_id, len(texts))  # shared quota
    return Outcome(info, labels, probs, entities)


async def predict(
    gateway: Gateway,
    principal: Principal,
    model_id: str,
    body: PredictRequest,
    files: list[tuple[str, bytes]],
) -> PredictResponse:
    """A text model's labels and entities for ``text``/``texts``, or an image model's answer
    for the images in ``files`` and the body (``predict_images``)."""
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
    label: str | list[str] | None = None
    score: float | list[float] | None = None
    if out.info.task == SENTIMENT:  # the label and its confidence (nlu.sentiment)
        answers = [sentiment.from_probabilities(row) for row in out.probs]
        results = [_first(r, a[0]) for r, a in zip(results, answers, strict=True)]
        labels, scores = [a[0] for a in answers], [a[1] for a in answers]
        label, score = (labels[0], scores[0]) if single else (labels, scores)
    return PredictResponse(
        model_id=out.info.id,
        predictions=results[0] if single else results,
        out_of_scope=(flags[0] if single else flags) if out.info.task == "intent" else None,
        label=label,
        score=score,
        entities=entities,
    )


async def parse_text(
    gateway: Gateway, principal: Principal, model_id: str, body: ParseRequest
) -> ParseResponse:
    """Intent and entities of one text, in Rasa's ``/model/parse`` shape."""
    if model_id == sentiment.NAME:  # built-in names are never aliases
        raise InvalidInput(
            f"{model_id} is a sentiment model, not an intent model: call predict for its "
            "label and score"
        )
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


def _first(predictions: list[Prediction], label: str) -> list[Prediction]:
    """``predictions`` with ``label`` first (a sentiment on a threshold ties at 0.5)."""
    return sorted(predictions, key=lambda p: p.label != label)


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


def _gather_images(
    gateway: Gateway, body: PredictRequest, files: list[tuple[str, bytes]]
) -> list[DecodedImage]:
    limits = gateway.settings.limits
    if body.text is not None or body.texts is not None:
        raise InvalidInput("send either text or images, not both")
    count = len(files) + body.image_count()
    if count > limits.max_batch_images:
        raise InvalidInput(
            f"{count} images in one call; send at most {limits.max_batch_images} "
            "(PARLEY_LIMITS__MAX_BATCH_IMAGES)"
        )
    items = list(files)
    for name, value in _named(body.image, "image", body.images, "images"):
        items.append((name, decode_base64(value, name, limits.max_image_bytes)))
    for name, url in _named(body.url, "url", body.urls, "urls"):
        fetched = fetch_url(
            url,
            name,
            gateway.settings.image_fetch,
            limits.max_image_bytes,
            guard=OutboundGuard.from_settings(gateway.settings),
        )
        items.append((name, fetched))
    return decode_inputs(
        items, max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes
    )


def _named(
    one: str | None, one_name: str, many: list[str] | None, many_name: str
) -> list[tuple[str, str]]:
    """The single value and the list's values with the field names errors use."""
    named = [(one_name, one)] if one is not None else []
    return named + [(f"{many_name}[{i}]", v) for i, v in enumerate(many or [])]


def _box(b: dict[str, Any]) -> BoxPublic:
    return BoxPublic(**{k: round(float(b[k]), 2) for k in ("x_min", "y_min", "x_max", "y_max")})


def _info(image: DecodedImage) -> ImageInfo:
    return ImageInfo(width=image.width, height=image.height, sha256=image.sha256)


async def predict_images(
    gateway: Gateway,
    principal: Principal,
    model_id: str,
    body: PredictRequest,
    files: list[tuple[str, bytes]],
) -> PredictResponse:
    """Run an image model on the request's images (see the module docstring)."""
    info, loaded = await load_ready(gateway, principal, model_id)
    if info.task not in IMAGE_TASKS:
        raise InvalidInput(f"model {info.id} is a {info.task} model: send text, not images")
    if body.entity_labels is not None:
        raise InvalidInput("entity_labels: image models return no entities")
    if info.task != "ocr" and (body.engine is not None or body.task is not None):
        raise InvalidInput("engine and task apply to prebuilt-ocr only")
    images = await run_in_threadpool(_gather_images, gateway, body, files)
    if not images:
        raise InvalidInput("no image sent")
    results = [ImageResult(image=_info(im)) for im in images]
    if info.task == "ocr":
        kwargs: dict[str, Any] = {"task": body.task}
        if body.engine is not None:
            kwargs["engine"] = body.engine
        read = await run_in_threadpool(loaded.read, [im.image for im in images], **kwargs)
        for result, found in zip(results, read, strict=True):
            result.text = found["text"]
            result.engine = found.get("engine")
            result.lines = [
                OcrLinePublic(
                    text=line["text"],
                    confidence=round(float(line["confidence"]), 4),
                    box=_box(line["box"]),
                    engine=line.get("engine"),
                )
                for line in found["lines"]
            ]
            if "entities" in found:
                result.entities = [EntityPublic(**e) for e in found["entities"]]
    elif info.task == "object-detection":
        kwargs = {} if body.min_score is None else {"min_score": body.min_score}
        found = await run_in_threadpool(loaded.detect, [im.image for im in images], **kwargs)
        for result, detections in zip(results, found, strict=True):
            result.probabilities = [
                ImagePrediction(
                    label=d.label,
                    probability=round(float(d.probability), 6),
                    box=_box(d.to_dict()["box"]),
                )
                for d in detections
            ]
    else:
        if isinstance(loaded, RemoteModel):
            labels, probs = await gateway.remote.classify_images(
                principal.tenant_id, loaded, [im.image for im in images]
            )
        else:
            probs = await asyncio.wait_for(
                asyncio.wrap_future(gateway.batcher.submit(loaded, images)), IMAGE_TIMEOUT_S
            )
            labels = list(loaded.labels)
        for result, row in zip(results, probs, strict=True):
            order = np.argsort(-row)[: body.num_results]
            result.probabilities = [
                ImagePrediction(label=labels[i], probability=round(float(row[i]), 6)) for i in order
            ]
            if getattr(loaded, "multi_label", False):
                result.labels = [
                    label
                    for label, p, t in zip(loaded.labels, row, loaded.thresholds, strict=True)
                    if p >= t
                ]
    gateway.usage.predicted(
        principal.tenant_id, info.id, task=info.task, backend=info.backend, count=len(images)
    )
    await gateway.admission.predicted(principal.tenant_id, len(images))  # shared quota
    if len(results) > 1:
        return PredictResponse(model_id=info.id, results=results)
    one = results[0]
    return PredictResponse(
        model_id=info.id,
        image=one.image,
        probabilities=one.probabilities,
        labels=one.labels,
        text=one.text,
        lines=one.lines,
        engine=one.engine,
        entities=one.entities,
    )
