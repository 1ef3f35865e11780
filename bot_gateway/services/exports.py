"""Model exports (``GET /v1/models/{id}/export?format=onnx``): a succeeded model as a zip that
runs with ONNX Runtime alone, outside Parley.

The zip holds ``model.onnx`` (one graph from the model's raw inputs to the probabilities the
server returns: the backend's ``export_onnx``), ``labels.json`` (labels in output order, the
out-of-scope rule of intent models, multi-label thresholds), ``preprocessing.json`` (what the
graph expects: ``core.onnx.TextPreprocessing`` or ``ImagePreprocessing``), the tokenizer of text
models, ``README.md`` (a Python snippet for this model's kind) and ``model_card.md``
(``training.cards``).

Built zips are kept in the cache folder under ``exports/``, named by model id, artifact sha256,
``EXPORT_FORMAT_VERSION`` and a digest of the small files (a moved out-of-scope threshold or a
grown dataset makes a new zip; the graph is rebuilt with it). A process builds at most
``PARLEY_SERVING__EXPORT_BUILDS`` zips at once (another build is ``TooManyRequests`` with a
``retry_after``; a zip already built is sent at once), and the least recently sent zips go
once they hold more than ``PARLEY_SERVING__EXPORT_CACHE_BYTES``. Everything here blocks: the
router runs it in the thread pool, never on the event loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from sqlalchemy import Engine

from core.backends import BackendContext, backends, builtin_models
from core.db import session_scope
from core.errors import InvalidInput, ModelLoadError, NotReady, TooManyRequests
from core.evaluation import OUT_OF_SCOPE
from core.logging import log_event
from core.onnx import EXPORT_GRAPH, ImagePreprocessing, OnnxExport, TextPreprocessing
from core.remote_models import BACKEND as REMOTE_BACKEND
from core.settings import Settings
from core.storage import ArtifactStore, verified_model_dir
from core.tables import Model
from training import registry
from training.cards import model_card, render_markdown

__all__ = [
    "EXPORT_FORMAT_VERSION",
    "EXPORT_FORMATS",
    "ExportFile",
    "ModelExports",
    "readme",
]

EXPORT_FORMAT_VERSION = 1
"""Grows whenever the zip's layout or contents change: older cached zips are then not sent."""

EXPORT_FORMATS = ("onnx",)
ExportFormat = Literal["onnx"]

STALE_BUILD_S = 3600
"""A build folder (``.build-*``) older than this was left by a process that died: removed."""

RETRY_AFTER_S = 5
"""What a refused build (all build slots busy) tells the client to wait."""

CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportFile:
    """A built export, opened for reading (the caller closes ``file``): an eviction that
    deletes the zip meanwhile leaves this handle readable."""

    file: IO[bytes]
    filename: str
    size: int

    def chunks(self) -> Iterator[bytes]:
        """The zip's bytes in chunks; closes the file at the end."""
        try:
            while chunk := self.file.read(CHUNK):
                yield chunk
        finally:
            self.file.close()


@dataclass(frozen=True)
class _Plan:
    """What a model's export needs, read from its row in one transaction."""

    model_id: str
    name: str
    backend: str
    artifact_key: str
    artifact_sha256: str
    labels_json: dict[str, Any]
    card: str


class ModelExports:
    """This gateway process's model exports (see the module docstring)."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.store = store
        self.root = settings.cache_dir / "exports"
        self.cache_bytes = settings.serving.export_cache_bytes
        self.context = BackendContext(
            cache_dir=settings.cache_dir, device="cpu", threads=settings.serving.torch_threads
        )
        self._slots = threading.BoundedSemaphore(settings.serving.export_builds)
        self._evicting = threading.Lock()
        self.builds = 0  # zips built by this process (a cached one sent is not a build)

    def export(
        self, engine: Engine, tenant_id: str, model_id: str, fmt: str = "onnx"
    ) -> ExportFile:
        """The tenant's model ``model_id`` (id or alias) exported as a zip in ``fmt``."""
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(
                f"export format {fmt!r} is not supported; use {', '.join(EXPORT_FORMATS)}"
            )
        with session_scope(engine) as session:
            plan = _plan(session, tenant_id, model_id)
        digest = hashlib.sha256(
            json.dumps(plan.labels_json, sort_keys=True).encode() + b"\0" + plan.card.encode()
        ).hexdigest()[:16]
        path = self.root / (
            f"{plan.model_id}-{plan.artifact_sha256[:16]}-v{EXPORT_FORMAT_VERSION}-{digest}.zip"
        )
        slug = _slug(plan.name)
        filename = f"{slug}-{plan.model_id}-onnx.zip" if slug else f"{plan.model_id}-onnx.zip"
        opened = _open(path)
        if opened is None:
            if not self._slots.acquire(blocking=False):
                raise TooManyRequests(
                    "another model export is being built on this server; try again in a few "
                    "seconds (exports already built are sent at once)",
                    retry_after=RETRY_AFTER_S,
                )
            try:
                opened = _open(path)  # built by another request while this one waited
                if opened is None:
                    self._build(plan, path)
                    opened = _open(path)
            finally:
                self._slots.release()
            self._evict(keep=path)
        if opened is None:  # evicted between the build and the open: only with a tiny budget
            raise ModelLoadError(f"model {plan.model_id}'s export vanished; ask for it again")
        return ExportFile(opened[0], filename, opened[1])

    def _build(self, plan: _Plan, path: Path) -> None:
        """Write the zip at ``path`` (atomically: readers never see half a zip)."""
        started = time.monotonic()
        directory = verified_model_dir(
            self.store,
            model_id=plan.model_id,
            key=plan.artifact_key,
            sha256=plan.artifact_sha256,
            use="export",
        )
        backend = backends.get(plan.backend)(self.context)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".build-") as tmp:
            work = Path(tmp) / "files"
            work.mkdir()
            export = backend.export_onnx(directory, work)
            labels_json = {**plan.labels_json, **_label_fields(export)}
            zip_tmp = Path(tmp) / "export.zip"
            with zipfile.ZipFile(zip_tmp, "w") as z:
                # the graph is mostly float weights, which deflate barely shrinks: stored
                z.write(work / EXPORT_GRAPH, EXPORT_GRAPH, compress_type=zipfile.ZIP_STORED)
                for name in export.files:
                    z.write(work / name, name, compress_type=zipfile.ZIP_DEFLATED)
                texts = {
                    "labels.json": json.dumps(labels_json, indent=2) + "\n",
                    "preprocessing.json": export.preprocessing.model_dump_json(indent=2) + "\n",
                    "README.md": readme(plan.name, plan.model_id, export, labels_json),
                    "model_card.md": plan.card,
                }
                for name, text in texts.items():
                    z.writestr(name, text, compress_type=zipfile.ZIP_DEFLATED)
            os.replace(zip_tmp, path)
        self.builds += 1
        log_event(
            "model_export.built",
            model=plan.model_id,
            bytes=path.stat().st_size,
            seconds=round(time.monotonic() - started, 2),
        )

    def _evict(self, *, keep: Path) -> None:
        """Delete the least recently sent zips (their mtime) while the folder holds more than
        the budget; never ``keep``, the zip just built."""
        with self._evicting:
            for build in self.root.glob(".build-*"):
                try:
                    stale = time.time() - build.stat().st_mtime > STALE_BUILD_S
                except FileNotFoundError:
                    continue
                if stale:
                    shutil.rmtree(build, ignore_errors=True)
            zips = []
            for p in self.root.glob("*.zip"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                zips.append((st.st_mtime, st.st_size, p))
            total = sum(size for _, size, _ in zips)
            for _, size, p in sorted(zips, key=lambda z: z[0]):
                if total <= self.cache_bytes:
                    break
                if p == keep:
                    continue
                p.unlink(missing_ok=True)
                total -= size
                log_event("model_export.evicted", path=p.name, bytes=size)


def _open(path: Path) -> tuple[IO[bytes], int] | None:
    """The zip opened, marked most recently used (its mtime), and its size; None if absent."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    os.utime(f.fileno())
    return f, os.fstat(f.fileno()).st_size


def _plan(session: Any, tenant_id: str, model_id: str) -> _Plan:
    """The model's export plan; ``NotFound`` (another tenant's too), ``InvalidInput`` for
    models that cannot be exported, ``NotReady`` for models not succeeded."""
    if model_id in builtin_models:
        raise InvalidInput(
            f"{model_id} is a built-in model that ships with Parley; only models trained on "
            "your datasets can be exported"
        )
    model = registry.resolve(session, tenant_id, model_id)
    if model.backend == REMOTE_BACKEND:
        raise InvalidInput(
            f"model {model.id} runs on your own model server, not in Parley; export it from there"
        )
    backend = backends.get(model.backend)
    if not backend.exports_onnx:
        raise InvalidInput(
            f"model {model.id} ({model.task}, backend {model.backend}) cannot be exported to "
            "ONNX; intent and image-classification models can"
        )
    if model.status != "succeeded" or not model.artifact_key or not model.artifact_sha256:
        raise NotReady(
            f"model {model.id} is {model.status}; it can be exported once it succeeds",
            status=model.status,
        )
    return _Plan(
        model_id=model.id,
        name=model.name,
        backend=model.backend,
        artifact_key=model.artifact_key,
        artifact_sha256=model.artifact_sha256,
        labels_json=_labels_json(model),
        card=render_markdown(model_card(session, model)),
    )


def _labels_json(model: Model) -> dict[str, Any]:
    """``labels.json`` less what the graph decides (``_label_fields``)."""
    out: dict[str, Any] = {
        "model_id": model.id,
        "name": model.name,
        "task": model.task,
        "backend": model.backend,
        "artifact_sha256": model.artifact_sha256,
        "export_format_version": EXPORT_FORMAT_VERSION,
    }
    if model.task == "intent":
        oos = (model.metrics or {}).get("out_of_scope") or {}
        threshold = oos.get("threshold") or None
        out["out_of_scope"] = {
            "label": OUT_OF_SCOPE,
            "threshold": threshold,
            "rule": (
                f"the input is out of scope when the top label is {OUT_OF_SCOPE!r}"
                + (
                    f" or the top probability is under {threshold} (then the server answers "
                    f"{OUT_OF_SCOPE!r} first with probability 1 - top probability)"
                    if threshold is not None
                    else " (the model has no threshold)"
                )
            ),
        }
    return out


def _label_fields(export: OnnxExport) -> dict[str, Any]:
    return {
        "labels": export.labels,
        "output": export.output,
        "multi_label": export.multi_label,
        "thresholds": export.thresholds,
    }


def _slug(name: str) -> str:
    """A file-name-safe, ASCII form of a model's name (it goes in a header)."""
    kept = "".join(c if (c.isascii() and c.isalnum()) or c in "_" else "-" for c in name.lower())
    return "-".join(part for part in kept.split("-") if part)[:60]


# --- README.md -----------------------------------------------------------------------------

TEXT_SNIPPET = '''\
import json

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
tokenizer = Tokenizer.from_file("tokenizer.json")  # truncation and padding already set
with open("labels.json") as f:
    meta = json.load(f)
labels, threshold = meta["labels"], meta["out_of_scope"]["threshold"]
inputs = [i.name for i in session.get_inputs()]


def probabilities(texts):
    """[len(texts), len(labels)]: the server's probabilities, one text per run."""
    rows = []
    for text in texts:  # one at a time: int8 encoders quantise per run, as the server does
        enc = tokenizer.encode(text)
        feeds = {
            "input_ids": np.array([enc.ids], dtype=np.int64),
            "attention_mask": np.array([enc.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([enc.type_ids], dtype=np.int64),
        }
        rows.append(session.run(["probabilities"], {n: feeds[n] for n in inputs})[0][0])
    return np.stack(rows)


def predict(text):
    """(label, probability): "out_of_scope" under the threshold, as the server answers."""
    row = probabilities([text])[0]
    top = int(row.argmax())
    if labels[top] == "out_of_scope":
        return labels[top], float(row[top])
    if threshold is not None and row[top] < threshold:
        return "out_of_scope", 1.0 - float(row[top])
    return labels[top], float(row[top])


print(predict("hello there"))
'''

IMAGE_SNIPPET = '''\
import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
with open("labels.json") as f:
    meta = json.load(f)
with open("preprocessing.json") as f:
    prep = json.load(f)
labels = meta["labels"]


def prepare(path):
    """An image file as the graph's [3, size, size] float32 input (preprocessing.json)."""
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    image = image.convert("RGB")
    size, shorter = prep["size"], prep["resize_shorter_side"]
    w, h = image.size
    scale = shorter / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = (np.asarray(image, dtype=np.float32) - prep["mean"]) / prep["std"]
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def probabilities(paths):
    """[len(paths), len(labels)]: the server's probabilities."""
    batch = np.stack([prepare(p) for p in paths])
    return session.run(["probabilities"], {prep["input"]: batch})[0]


def predict(path):
    row = probabilities([path])[0]
    if meta["multi_label"]:  # every label whose probability reaches its threshold
        return [lab for lab, p, t in zip(labels, row, meta["thresholds"]) if p >= t]
    top = int(row.argmax())
    return labels[top], float(row[top])


print(predict("photo.jpg"))
'''


def readme(name: str, model_id: str, export: OnnxExport, labels_json: dict[str, Any]) -> str:
    """The export's README: what is in the zip and how to run it with ONNX Runtime."""
    prep = export.preprocessing
    lines = [
        f"# {name} ({model_id}), exported from Parley",
        "",
        "`model.onnx` is one graph from the model's raw inputs to the probabilities Parley "
        f"serves (output `{export.output}`, one column per label in `labels.json` order). "
        "It runs with ONNX Runtime alone:",
        "",
    ]
    if isinstance(prep, TextPreprocessing):
        lines += [
            "```bash",
            "pip install onnxruntime tokenizers numpy",
            "```",
            "",
            f"Inputs: {', '.join(f'`{i}`' for i in prep.inputs)} (int64 `[batch, tokens]`) "
            f"from `{prep.tokenizer_file}` (the `{prep.encoder}` tokenizer, cutting at "
            f"{prep.max_tokens} tokens; it lower-cases itself where the encoder does). The "
            f"encoder runs in {prep.precision}"
            + (
                ": run one text at a time to get the server's numbers exactly (int8 quantises "
                "activations per run)."
                if prep.one_text_per_run
                else "."
            ),
            "",
            "```python",
            TEXT_SNIPPET.rstrip("\n"),
            "```",
            "",
            "## Out of scope",
            "",
            labels_json["out_of_scope"]["rule"][0].upper()
            + labels_json["out_of_scope"]["rule"][1:]
            + ". The threshold is in `labels.json` (`out_of_scope.threshold`), not in the graph.",
            "",
        ]
    else:
        assert isinstance(prep, ImagePreprocessing)
        lines += [
            "```bash",
            "pip install onnxruntime pillow numpy",
            "```",
            "",
            f"Input `{prep.input}`: {prep.layout}. Preprocessing (`preprocessing.json`): "
            f"EXIF orientation applied, transparency on white, RGB; the shorter side resized "
            f"to {prep.resize_shorter_side} px ({prep.resample}); a centre crop of "
            f"{prep.size} x {prep.size}; `(x - {prep.mean:g}) / {prep.std:g}` per channel.",
            "",
            "```python",
            IMAGE_SNIPPET.rstrip("\n"),
            "```",
            "",
        ]
        if export.multi_label:
            lines += [
                "## Multi-label",
                "",
                "Each output column is its label's own probability (a sigmoid); a label applies "
                "when its probability reaches its threshold (`labels.json` `thresholds`, tuned "
                "on the held-out split).",
                "",
            ]
    lines += [
        "## Files",
        "",
        "- `model.onnx`: the graph",
        "- `labels.json`: labels in output order"
        + (", the out-of-scope rule" if "out_of_scope" in labels_json else "")
        + (", per-label thresholds" if export.multi_label else ""),
        "- `preprocessing.json`: what the graph expects",
        *(f"- `{f}`: the tokenizer (Hugging Face `tokenizers`)" for f in export.files),
        "- `model_card.md`: the model card (data, metrics, limitations)",
        "",
    ]
    return "\n".join(lines)
