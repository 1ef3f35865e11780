"""An LRU cache of loaded models, keyed by model id and artifact checksum.

A model is loaded once per process (a head is kilobytes and loads in milliseconds); its
artifact's sha256 is checked against the registry record before it is trusted.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from core.errors import ModelLoadError, NotFound
from core.logging import log_event
from core.storage import ArtifactStore, sha256_dir
from training.backends import BackendContext, TextClassifier, backends


@dataclass(frozen=True)
class ModelRef:
    """What the cache needs to know of a model record."""

    id: str
    backend: str
    artifact_key: str
    artifact_sha256: str


class ModelCache:
    def __init__(self, store: ArtifactStore, context: BackendContext, capacity: int) -> None:
        self.store, self.context, self.capacity = store, context, capacity
        self._items: OrderedDict[tuple[str, str], TextClassifier] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0

    def _hit(self, key: tuple[str, str]) -> TextClassifier | None:
        """A cached model, marked most recently used (call with the lock held)."""
        model = self._items.get(key)
        if model is not None:
            self._items.move_to_end(key)
        return model

    def peek(self, ref: ModelRef) -> TextClassifier | None:
        """The loaded model if it is in the cache (no loading, no waiting)."""
        with self._lock:
            return self._hit((ref.id, ref.artifact_sha256))

    def get(self, ref: ModelRef) -> TextClassifier:
        """The loaded model, loading it (once, however many callers wait) if needed."""
        key = (ref.id, ref.artifact_sha256)
        with self._lock:
            model = self._hit(key)
            if model is not None:
                return model
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                model = self._hit(key)
                if model is not None:
                    return model
            try:
                model = self._load(ref)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._items[key] = model
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            return model

    def _load(self, ref: ModelRef) -> TextClassifier:
        try:
            directory = self.store.local_dir(ref.artifact_key)
        except NotFound as e:
            raise ModelLoadError(
                f"model {ref.id}'s files are missing from storage; train it again"
            ) from e
        digest = sha256_dir(directory)
        if digest != ref.artifact_sha256:
            raise ModelLoadError(
                f"model {ref.id}'s files do not match their recorded checksum; refusing to load "
                "them. Train the model again"
            )
        backend = backends.get(ref.backend)(self.context)
        model = backend.load(directory)
        self.loads += 1
        log_event("serving.model_loaded", model=ref.id)
        return model

    def __len__(self) -> int:
        return len(self._items)
