"""Prediction on images, shared by ``POST /v1/models/{id}/predict`` and ``POST /v1/ocr``.

Reading the request (JSON with base64 images or URLs, or multipart files), decoding every
image safely off the event loop, and running the model: classification heads go through the
micro-batcher (every tenant's head shares one Lite0 feature pass; identical images once),
detectors and OCR run in the thread pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from bot_gateway.deps import Gateway
from bot_gateway.schemas import (
    BoxPublic,
    EntityPublic,
    ImageInfo,
    ImagePrediction,
    ImageResult,
    OcrLinePublic,
    PredictRequest,
    PredictResponse,
)
from bot_gateway.serving.cache import ModelRef
from bot_gateway.serving.image_inputs import decode_base64, decode_inputs, fetch_url
from bot_gateway.serving.lookup import BUILTIN, ModelInfo
from core.errors import InvalidInput, NotReady, PayloadTooLarge
from core.images import DecodedImage
from core.outbound import OutboundGuard
from core.tenants import Principal

__all__ = ["IMAGE_TASKS", "load_ready", "predict_images", "read_predict_request"]

IMAGE_TASKS = frozenset({"image-classification", "image-multi-label", "object-detection", "ocr"})
TIMEOUT_S = 60.0
FORM_OPTIONS = ("num_results", "engine", "task", "min_score", "entity_labels")


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
    ref = ModelRef(
        id=info.id,
        backend=info.backend,
        artifact_key=info.artifact_key,
        artifact_sha256=info.artifact_sha256,
    )
    return info, gateway.cache.peek(ref) or await run_in_threadpool(gateway.cache.get, ref)


async def read_predict_request(
    request: Request, gateway: Gateway
) -> tuple[PredictRequest, list[tuple[str, bytes]]]:
    """The options, and the uploaded files as ``(name, bytes)`` (multipart only)."""
    limits = gateway.settings.limits
    length = request.headers.get("content-length", "")
    budget = limits.max_image_bytes * limits.max_batch_images + 256 * 1024
    if length.isdigit() and int(length) > budget:
        raise PayloadTooLarge(
            f"the request is {length} bytes; send at most {limits.max_batch_images} images of "
            f"{limits.max_image_bytes} bytes each",
            limit="max_image_bytes",
        )
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            return PredictRequest.model_validate_json(await request.body()), []
        except ValueError as e:
            raise InvalidInput(f"invalid JSON body: {e}") from e
    try:
        form = await request.form(max_files=limits.max_batch_images + 1, max_fields=20)
    except Exception as e:  # noqa: BLE001 - starlette raises several kinds for a bad body
        raise InvalidInput(f"could not read the multipart form: {e}") from e
    files: list[tuple[str, bytes]] = []
    options: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in ("file", "files", "image"):
                raise InvalidInput(f"unexpected file field {key!r}; send images as `file`")
            data = await value.read(limits.max_image_bytes + 1)
            name = f"file {value.filename or len(files) + 1}"
            if len(data) > limits.max_image_bytes:
                raise PayloadTooLarge(
                    f"{name} is over {limits.max_image_bytes} bytes "
                    "(PARLEY_LIMITS__MAX_IMAGE_BYTES)",
                    limit="max_image_bytes",
                )
            files.append((name, data))
        elif key in FORM_OPTIONS:
            options[key] = value.split(",") if key == "entity_labels" else value
        elif key in ("text", "texts"):
            raise InvalidInput("send text as JSON, not in a multipart form")
        else:
            raise InvalidInput(
                f"unknown form field {key!r}; known: file, {', '.join(FORM_OPTIONS)}"
            )
    try:
        return PredictRequest.model_validate(options), files
    except ValueError as e:
        raise InvalidInput(f"invalid form fields: {e}") from e


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
        probs = await asyncio.wait_for(
            asyncio.wrap_future(gateway.batcher.submit(loaded, images)), TIMEOUT_S
        )
        for result, row in zip(results, probs, strict=True):
            order = np.argsort(-row)[: body.num_results]
            result.probabilities = [
                ImagePrediction(label=loaded.labels[i], probability=round(float(row[i]), 6))
                for i in order
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
