"""An LRU cache of loaded models, keyed by model id and artifact checksum, within a count and a
memory budget (a model's ``nbytes``: a 77-label intent head is about 120 kB, so a thousand
tenants' heads fit in a few hundred MB beside the one shared encoder).

A model is loaded once per process (a head is kilobytes and loads in milliseconds); its
artifact's sha256 is checked against the registry record before it is trusted.

The weights every head shares (the sentence encoder, image features, OCR engines: the process's
``core.shared_models``) are never evicted, but when the cache is given them (``shared``, as the
gateway does) their bytes count against the budget: what they take is not left for heads.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

from core.backends import BackendContext, TextClassifier, load_model, set_torch_threads
from core.logging import log_event
from core.shared_models import SharedModels
from core.storage import ArtifactStore, verified_model_dir


@dataclass(frozen=True)
class ModelRef:
    """What the cache needs to know of a model record."""

    id: str
    backend: str
    artifact_key: str
    artifact_sha256: str


class ModelCache:
    def __init__(
        self,
        store: ArtifactStore,
        context: BackendContext,
        capacity: int,
        budget_bytes: int | None = None,
        shared: SharedModels | None = None,
    ) -> None:
        self.store, self.context, self.capacity = store, context, capacity
        self.budget_bytes = budget_bytes
        self.shared = shared
        self._warned_shared: int | None = None  # shared bytes when last warned of the budget
        self.nbytes = 0  # the cached models' bytes (shared weights not included)
        self.evictions = 0
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
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            shared = self.shared_bytes
            with self._lock:  # stored and no longer loading in one step: no second load
                self._items[key] = model
                self._loading.pop(key, None)
                self.nbytes += model_size(model)
                if self.budget_bytes is not None and shared >= self.budget_bytes:
                    self._shared_over_budget(shared)
                while len(self._items) > 1 and (
                    len(self._items) > self.capacity
                    or (self.budget_bytes is not None and self.nbytes + shared > self.budget_bytes)
                ):
                    _, evicted = self._items.popitem(last=False)
                    self.nbytes -= model_size(evicted)
                    self.evictions += 1
            return model

    def _load(self, ref: ModelRef) -> TextClassifier:
        directory = verified_model_dir(
            self.store, model_id=ref.id, key=ref.artifact_key, sha256=ref.artifact_sha256
        )
        model = load_model(ref.backend, directory, self.context)
        set_torch_threads(self.context.threads, if_imported=True)  # a model that loaded torch
        self.loads += 1
        log_event("serving.model_loaded", model=ref.id)
        return model

    def _shared_over_budget(self, shared: int) -> None:
        """Say (once per size of the shared weights) that they leave no room for heads."""
        if self._warned_shared == shared:
            return
        self._warned_shared = shared
        log_event(
            "serving.cache.budget_taken_by_shared_weights",
            level=logging.WARNING,
            shared_bytes=shared,
            budget_bytes=self.budget_bytes,
            hint="only the last model used stays loaded; raise PARLEY_SERVING__MODEL_CACHE_BYTES",
        )

    @property
    def shared_bytes(self) -> int:
        """Bytes of the shared weights counted against the budget (0 when not given them)."""
        return self.shared.nbytes if self.shared is not None else 0

    def __len__(self) -> int:
        return len(self._items)


def model_size(model: object) -> int:
    """Bytes a loaded model holds (its ``nbytes``; 0 if the backend does not say)."""
    return int(getattr(model, "nbytes", 0))
