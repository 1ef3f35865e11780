"""Models served elsewhere, over the Open Inference Protocol (KServe V2, REST).

A tenant registers a model that runs on its own server (MLServer, KServe, Triton, ...) with
``POST /v1/models/remote``; Parley calls it as it calls its own models. This module is the
protocol: what registration asks the server (``describe``), how Parley's inputs become one V2
input tensor and how the answer becomes labels with probabilities.

Registration: ``GET {url}/v2/models/{model_name}/ready`` (200, else refused), then the
metadata ``GET {url}/v2/models/{model_name}`` (its ``inputs`` and ``outputs``), and
``plan`` picks what to send and what to read:

- the input: the model's one declared input (text: ``BYTES``; image: ``UINT8``, ``FP32`` or
  ``FP16`` of rank 4 with 3 channels, ``[-1, H, W, 3]`` or ``[-1, 3, H, W]``); a model that
  declares no inputs gets ``text`` (``BYTES``, ``[-1]``) or ``image`` (``UINT8``,
  ``[-1, 224, 224, 3]``);
- the output: the first declared float output (class scores), else a ``BYTES`` output (one
  label per input), else an integer one (an index into the labels); it is asked for by name
  in every call. A model that declares none is read from the first output it returns;
- the labels (``plan``): the ``labels`` the tenant sent, else ``parameters.labels`` of the
  chosen output in the metadata, else of the model. Scores need them (column ``j`` is
  ``labels[j]``; a declared width must match); a ``BYTES`` output does not.

Calls: ``POST {url}/v2/models/{model_name}/infer`` with the chosen input — texts as a
``BYTES`` tensor of shape ``[n]`` (``[n, 1]`` when the input is declared with rank 2); images
RGB, stretched to the declared ``H x W`` (224 where a side is ``-1``), in the declared layout,
``UINT8`` 0-255 or floats 0-1 — and the declared input's ``parameters`` (MLServer's
``content_type``) echoed. Reading the answer (``read_scores``): scores of shape ``[n, k]``; a
row of non-negative values summing to 1 (within 0.01) is taken as probabilities, any other row
as logits (softmax). A ``BYTES`` answer gives its label probability 1. Anything else, a non-2xx
answer, a timeout or a refused connection is ``RemoteModelError`` (502), naming the model and
the server; the tenant's header values travel with every request (they are stored encrypted,
``core.secrets``).

Every request goes through the client it is handed; the gateway's goes through
``core.outbound.OutboundTransport`` (private addresses refused unless allowed).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import InvalidInput, OutboundRefused, RemoteModelError

__all__ = [
    "BACKEND",
    "TASKS",
    "RemoteModel",
    "RemoteParams",
    "TensorSpec",
    "V2Metadata",
    "check_headers",
    "describe",
    "image_request",
    "infer",
    "normalise_url",
    "plan",
    "read_scores",
    "task_of",
    "text_request",
]

BACKEND = "remote-oip"
"""``models.backend`` of a remote model (Open Inference Protocol)."""

TASKS: dict[str, str] = {
    "text-intent": "intent",
    "intent": "intent",
    "image": "image-classification",
    "image-classification": "image-classification",
}
"""The ``task`` a registration may name (the dataset type's name or Parley's task name) →
Parley's task."""

FLOATS = ("FP16", "FP32", "FP64")
INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
IMAGE_TYPES = ("UINT8", "FP32", "FP16")
DEFAULT_SIDE = 224
MAX_HEADERS = 20
MAX_LABELS = 1000
SUM_TOLERANCE = 0.01
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade"}
)


class TensorSpec(BaseModel):
    """A tensor as V2 metadata declares it."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=200)
    datatype: str
    shape: list[int] = Field(default_factory=list)
    parameters: dict[str, Any] | None = None


class V2Metadata(BaseModel):
    """A model's metadata answer (``GET /v2/models/{name}``)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    platform: str | None = None
    versions: list[str] | None = None
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    parameters: dict[str, Any] | None = None


class RemoteParams(BaseModel):
    """What ``models.params`` holds for a remote model (header values encrypted at rest)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    model_name: str
    protocol: str = "v2"
    headers: dict[str, str] = Field(default_factory=dict)
    input: TensorSpec
    output: TensorSpec | None = None
    labels: list[str] | None = None


@dataclass(frozen=True)
class RemoteModel:
    """A remote model ready to call: its plan, with header values in clear."""

    id: str
    task: str
    url: str
    model_name: str
    input: TensorSpec
    output: TensorSpec | None
    labels: tuple[str, ...] | None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{quote(self.model_name, safe='')}/infer"

    def failure(self, what: str) -> RemoteModelError:
        return RemoteModelError(
            f"remote model {self.id} at {self.url} (V2 model {self.model_name!r}) {what}",
            url=self.url,
            model_id=self.id,
        )


# --- registration -------------------------------------------------------------------------


def task_of(task: str) -> str:
    """Parley's task for a registration's ``task``; ``InvalidInput`` listing those accepted."""
    if task not in TASKS:
        raise InvalidInput(
            f"task {task!r}: a remote model can be {', '.join(TASKS)} (object detection and "
            "OCR models are not served remotely in this release)"
        )
    return TASKS[task]


def normalise_url(url: str) -> str:
    """The server's base URL without a trailing slash; ``InvalidInput`` unless it is a plain
    http(s) URL (credentials belong in ``headers``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as e:
        raise InvalidInput(f"url {url!r} is not a URL ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(
            f"url {url!r}: give the server's http(s) base URL, e.g. http://host:8080"
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: put credentials in headers, not in the URL")
    if parts.query or parts.fragment:
        raise InvalidInput("url: give the base URL without a query or fragment")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{port}" if port is not None else ""
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """The headers to send with every call (e.g. ``Authorization``); ``InvalidInput`` for a
    bad name or value, or one Parley sets itself."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not HEADER_NAME.match(name):
            raise InvalidInput(f"headers: {name!r} is not a header name")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidInput(f"headers: Parley sets {name} itself; leave it out")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise InvalidInput(f"headers.{name}: give a one-line string")
        out[name] = value
    if len(out) > MAX_HEADERS:
        raise InvalidInput(f"headers: {len(out)} given; send at most {MAX_HEADERS}")
    return out


async def describe(
    client: httpx.AsyncClient,
    *,
    url: str,
    model_name: str,
    headers: Mapping[str, str],
    timeout: float,
) -> V2Metadata:
    """The model's V2 metadata, after checking that it is ready. ``RemoteModelError`` (502)
    when the server cannot be reached or fails; ``InvalidInput`` (422) when it answers but
    not as a V2 server with a ready model of that name."""
    base = f"{url}/v2/models/{quote(model_name, safe='')}"
    where = f"remote model server at {url}"
    ready = await _get(client, f"{base}/ready", headers, timeout, where)
    if ready.status_code == 404:
        raise InvalidInput(
            f"{where} has no model {model_name!r} (GET {base}/ready answered 404); check "
            "model_name and that the server speaks the Open Inference Protocol (KServe V2)",
            url=url,
        )
    if ready.status_code >= 500:
        raise RemoteModelError(
            f"{where} failed: GET {base}/ready answered {ready.status_code}", url=url
        )
    if ready.status_code != 200:
        raise InvalidInput(
            f"{where}: model {model_name!r} is not ready (GET {base}/ready answered "
            f"{ready.status_code}); register it once the server has loaded it",
            url=url,
        )
    answer = await _get(client, base, headers, timeout, where)
    if answer.status_code >= 500:
        raise RemoteModelError(f"{where} failed: GET {base} answered {answer.status_code}", url=url)
    try:
        if answer.status_code != 200:
            raise ValueError(f"answered {answer.status_code}")
        return V2Metadata.model_validate(answer.json())
    except (ValueError, ValidationError) as e:
        problem = str(e).splitlines()[0]
        raise InvalidInput(
            f"{where}: GET {base} did not return V2 model metadata ({problem}); is it an Open "
            "Inference Protocol (KServe V2) server?",
            url=url,
        ) from None


async def _get(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: float, where: str
) -> httpx.Response:
    try:
        return await client.get(url, headers=dict(headers), timeout=timeout)
    except OutboundRefused:
        raise
    except httpx.TimeoutException:
        raise RemoteModelError(f"{where} did not answer within {timeout:g} s", url=url) from None
    except httpx.HTTPError as e:
        raise RemoteModelError(f"{where} cannot be reached ({_reason(e)})", url=url) from None


def plan(
    task: str, metadata: V2Metadata, labels: Sequence[str] | None
) -> tuple[TensorSpec, TensorSpec | None, list[str] | None]:
    """The input to send, the output to read and the labels, for a model of Parley's ``task``
    with this metadata (see the module docstring); ``InvalidInput`` saying what does not fit."""
    name = metadata.name
    inputs = metadata.inputs or []
    if len(inputs) > 1:
        raise InvalidInput(
            f"V2 model {name!r} declares {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}); Parley sends one tensor"
        )
    if task == "intent":
        spec = inputs[0] if inputs else TensorSpec(name="text", datatype="BYTES", shape=[-1])
        if spec.datatype != "BYTES" or len(spec.shape) not in (1, 2):
            raise InvalidInput(
                f"V2 model {name!r} takes {spec.datatype} {spec.shape}; a text model's input "
                "must be BYTES of shape [-1] or [-1, 1]"
            )
    else:
        spec = (
            inputs[0]
            if inputs
            else TensorSpec(name="image", datatype="UINT8", shape=[-1, 224, 224, 3])
        )
        if spec.datatype not in IMAGE_TYPES or _layout(spec) is None:
            raise InvalidInput(
                f"V2 model {name!r} takes {spec.datatype} {spec.shape}; an image model's input "
                f"must be {', '.join(IMAGE_TYPES)} of shape [-1, H, W, 3] or [-1, 3, H, W]"
            )
    outputs = metadata.outputs or []
    output = next(
        (o for kinds in (FLOATS, ("BYTES",), INTS) for o in outputs if o.datatype in kinds), None
    )
    if outputs and output is None:
        raise InvalidInput(
            f"V2 model {name!r} declares no output Parley can read (scores FP16/FP32/FP64, "
            "labels BYTES, or class indices INT*): " + ", ".join(o.datatype for o in outputs)
        )
    chosen = list(labels) if labels is not None else _declared_labels(metadata, output)
    if chosen is not None:
        _check_labels(chosen)
    if chosen is None and (output is None or output.datatype != "BYTES"):
        raise InvalidInput(
            f"V2 model {name!r} answers "
            + ("scores" if output is not None else "with outputs it does not declare")
            + "; send labels: the label of each score column, in the model's order (for "
            "scikit-learn, classes_)"
        )
    width = output.shape[-1] if output is not None and len(output.shape) >= 2 else -1
    scores = output is not None and output.datatype in FLOATS
    if output is not None and scores and chosen and 0 < width != len(chosen):
        raise InvalidInput(
            f"V2 model {name!r} declares {width} scores per input ({output.name} "
            f"{output.shape}) but {len(chosen)} labels were given"
        )
    return spec, output, chosen


def _declared_labels(metadata: V2Metadata, output: TensorSpec | None) -> list[str] | None:
    for params in ((output.parameters if output else None), metadata.parameters):
        found = (params or {}).get("labels")
        if isinstance(found, list) and all(isinstance(x, str) for x in found):
            return list(found)
    return None


def _check_labels(labels: list[str]) -> None:
    if not labels or len(labels) > MAX_LABELS:
        raise InvalidInput(f"labels: give 1 to {MAX_LABELS} labels")
    if len(set(labels)) != len(labels):
        raise InvalidInput("labels: each label once")
    if any(not label.strip() or len(label) > 200 for label in labels):
        raise InvalidInput("labels: each label 1 to 200 characters, not blank")


def _layout(spec: TensorSpec) -> tuple[str, int, int] | None:
    """``("NHWC" | "NCHW", height, width)`` of an image input, or None if it is not one."""
    shape = spec.shape
    if len(shape) != 4:
        return None
    if shape[3] == 3:
        layout, h, w = "NHWC", shape[1], shape[2]
    elif shape[1] == 3:
        layout, h, w = "NCHW", shape[2], shape[3]
    else:
        return None
    return layout, h if h > 0 else DEFAULT_SIDE, w if w > 0 else DEFAULT_SIDE


# --- calls ----------------------------------------------------------------------------------


def text_request(model: RemoteModel, texts: Sequence[str]) -> dict[str, Any]:
    """The V2 inference request for ``texts``."""
    shape = [len(texts), 1] if len(model.input.shape) == 2 else [len(texts)]
    return _request(model, shape, "BYTES", list(texts))


def image_request(model: RemoteModel, images: Sequence[Image.Image]) -> dict[str, Any]:
    """The V2 inference request for ``images`` (RGB); CPU work: run it off the event loop."""
    layout = _layout(model.input)
    assert layout is not None  # plan() checked it
    order, height, width = layout
    batch = np.stack(
        [
            np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.BILINEAR))
            for im in images
        ]
    )
    if order == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    data: np.ndarray = batch if model.input.datatype == "UINT8" else batch / 255.0
    return _request(model, list(data.shape), model.input.datatype, data.ravel().tolist())


def _request(
    model: RemoteModel, shape: list[int], datatype: str, data: list[Any]
) -> dict[str, Any]:
    tensor: dict[str, Any] = {
        "name": model.input.name,
        "shape": shape,
        "datatype": datatype,
        "data": data,
    }
    if model.input.parameters:
        tensor["parameters"] = model.input.parameters
    body: dict[str, Any] = {"inputs": [tensor]}
    if model.output is not None:
        body["outputs"] = [{"name": model.output.name}]
    return body


async def infer(
    client: httpx.AsyncClient, model: RemoteModel, content: bytes, *, timeout: float
) -> Any:
    """POST an encoded inference request; the decoded JSON answer, or ``RemoteModelError``."""
    headers = {**model.headers, "Content-Type": "application/json"}
    try:
        answer = await client.post(
            model.infer_url, content=content, headers=headers, timeout=timeout
        )
    except OutboundRefused:
        raise
    except httpx.TimeoutException:
        raise model.failure(f"did not answer within {timeout:g} s") from None
    except httpx.HTTPError as e:
        raise model.failure(f"cannot be reached ({_reason(e)})") from None
    if answer.status_code != 200:
        raise model.failure(f"answered {answer.status_code}: {_error_text(answer)}")
    try:
        return answer.json()
    except ValueError:
        raise model.failure("answered something that is not JSON") from None


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def read_scores(model: RemoteModel, answer: Any, count: int) -> tuple[list[str], np.ndarray]:
    """Labels and one row of probabilities per input from a V2 inference answer."""
    try:
        outputs = answer["outputs"]
        if not isinstance(outputs, list) or not outputs:
            raise ValueError("no outputs")
        wanted = model.output.name if model.output is not None else None
        out = next((o for o in outputs if o.get("name") == wanted), None) if wanted else outputs[0]
        if out is None:
            raise ValueError(f"no output named {wanted!r}")
        datatype, shape = str(out["datatype"]), [int(d) for d in out["shape"]]
        data = np.asarray(out["data"], dtype=object).ravel()
        if data.size != math.prod(shape):
            raise ValueError(f"{out['name']}: {data.size} values for shape {shape}")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise model.failure(
            f"answered something that is not a V2 inference response ({e})"
        ) from None
    if datatype in FLOATS:
        return _scores(model, data, count)
    if datatype == "BYTES" or datatype in INTS:
        if data.size != count:
            raise model.failure(
                f"answered {data.size} values for {count} inputs ({datatype} {shape})"
            )
        return _one_hot(model, data, datatype)
    raise model.failure(f"answered a {datatype} output; Parley reads FP*, BYTES or INT* outputs")


def _scores(model: RemoteModel, data: np.ndarray, count: int) -> tuple[list[str], np.ndarray]:
    labels = list(model.labels or ())
    if not labels:
        raise model.failure("answered scores, but the model was registered without labels")
    try:
        rows = data.astype(np.float64)
    except (TypeError, ValueError):
        raise model.failure("answered scores that are not numbers") from None
    if rows.size != count * len(labels):
        raise model.failure(
            f"answered {rows.size} scores for {count} inputs and {len(labels)} labels"
        )
    rows = rows.reshape(count, len(labels))
    if not np.isfinite(rows).all():
        raise model.failure("answered scores that are not finite")
    probability = (rows >= 0).all(axis=1) & (np.abs(rows.sum(axis=1) - 1) <= SUM_TOLERANCE)
    exp = np.exp(rows - rows.max(axis=1, keepdims=True))
    return labels, np.where(probability[:, None], rows, exp / exp.sum(axis=1, keepdims=True))


def _one_hot(model: RemoteModel, data: np.ndarray, datatype: str) -> tuple[list[str], np.ndarray]:
    labels = list(model.labels or ())
    picked: list[str] = []
    for value in data:
        if datatype == "BYTES":
            picked.append(value.decode() if isinstance(value, bytes) else str(value))
            continue
        index = int(value)
        if not 0 <= index < len(labels):
            raise model.failure(f"answered class index {index}; the model has {len(labels)} labels")
        picked.append(labels[index])
    labels += [label for label in dict.fromkeys(picked) if label not in labels]
    rows = np.zeros((len(picked), len(labels)))
    for i, label in enumerate(picked):
        rows[i, labels.index(label)] = 1.0
    return labels, rows


def _reason(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0][:200]


def _error_text(answer: httpx.Response) -> str:
    """The first 200 characters of an error answer (its ``error`` field when JSON)."""
    try:
        body = answer.json()
        text = (
            str(body.get("error") or body.get("detail") or body)
            if isinstance(body, dict)
            else str(body)
        )
    except ValueError:
        text = answer.text
    return " ".join(text.split())[:200] or "(no body)"
