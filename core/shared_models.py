"""The process's shared weights: one cache for the models that every tenant's requests use.

The sentence encoder, the pre-built entity pipeline, the encoder-NER base, the image feature
extractor and the OCR engines are loaded once per process and shared by every tenant. They
live here, in ``shared_models``, as entries keyed by everything that changes what is loaded
(``SharedKey``: kind, name, device, threads, cache folder, variant), each with its size in
bytes (parameters and buffers for PyTorch, the model files for ONNX Runtime, spaCy and
Tesseract: an estimate of what the process holds). An entry is loaded once, under a lock per
key, however many threads ask at the same time; a failed load leaves no entry, so the next
caller tries again and sees the error.

Shared weights are never evicted (every tenant's head needs them); the gateway's model cache
counts their bytes against its memory budget (``PARLEY_SERVING__MODEL_CACHE_BYTES``), so they
reduce the room left for per-tenant heads::

    encoder = shared_models.get(
        SharedKey("sentence-encoder", "all-MiniLM-L6-v2", device="cpu", threads=1),
        load=lambda: SentenceEncoder(...),
        size=lambda e: e.nbytes,
    )
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from core.logging import log_event

__all__ = [
    "SharedEntry",
    "SharedKey",
    "SharedModels",
    "files_nbytes",
    "shared_models",
    "torch_nbytes",
]

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class SharedKey:
    """What identifies one loaded copy of shared weights: change any field, get another copy."""

    kind: str  # what it is: "sentence-encoder", "ocr-engine", ...
    name: str  # which model of that kind
    device: str = "cpu"
    threads: int = 0  # the runtime's thread count; 0 where the weights do not depend on one
    cache_dir: str = ""  # the folder derived files (ONNX exports) are read from, if any
    variant: str = ""  # anything else that changes it (runtime, precision, token limit)


@dataclass(frozen=True)
class SharedEntry:
    """One loaded copy: the object, its size in bytes, and how long it took to load."""

    key: SharedKey
    value: Any
    nbytes: int
    load_seconds: float


class SharedModels:
    """Shared weights of one process, loaded once per key and never evicted. Thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[SharedKey, SharedEntry] = {}
        self._loading: dict[SharedKey, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: SharedKey, load: Callable[[], T], size: Callable[[T], int]) -> T:
        """The value under ``key``, calling ``load`` (once) when there is none yet.

        ``size(value)`` gives its bytes, counted in ``nbytes``. Callers of the same key wait
        for one load; callers of other keys do not wait for it.
        """
        entry = self._entries.get(key)  # the hot path: a dict read, no lock (atomic in CPython)
        if entry is not None:
            return cast(T, entry.value)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return cast(T, entry.value)
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None:
                return cast(T, entry.value)
            began = time.perf_counter()
            try:
                value = load()
                nbytes = int(size(value))
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            entry = SharedEntry(key, value, nbytes, time.perf_counter() - began)
            with self._lock:  # stored and no longer loading in one step: no second load
                self._entries[key] = entry
                self._loading.pop(key, None)
            log_event(
                "shared_models.loaded",
                kind=key.kind,
                name=key.name,
                device=key.device,
                threads=key.threads,
                variant=key.variant,
                nbytes=nbytes,
                seconds=round(entry.load_seconds, 3),
            )
            return value

    def entries(self) -> list[SharedEntry]:
        """Every loaded entry, in key order."""
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.key)

    @property
    def nbytes(self) -> int:
        """Bytes held by all loaded entries."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries


shared_models = SharedModels()
"""The process's one cache of shared weights."""


def torch_nbytes(module: Any) -> int:
    """Bytes of a PyTorch module's parameters and buffers (a tensor shared twice counts once)."""
    seen: set[int] = set()
    total = 0
    for tensor in (*module.parameters(), *module.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total


def files_nbytes(paths: Iterable[Path]) -> int:
    """Bytes of model files on disk (files under a folder included): the estimate of what a
    runtime that is not PyTorch (ONNX Runtime, spaCy, Tesseract) holds once it read them."""
    total = 0
    for path in paths:
        if path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        elif path.is_file():
            total += path.stat().st_size
    return total
