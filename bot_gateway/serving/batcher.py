"""Micro-batching: concurrent predictions share one encoder pass (dynamic batching).

Requests queue up while the inference threads are busy; a free thread then takes what waits
(its share: the waiting requests divided among the ``threads`` inference threads, up to
``max_batch`` texts, waiting at most ``wait_ms`` for more to arrive — only while requests are
arriving together: after a batch of one, the next batch does not wait), featurizes the texts of
models that share a ``feature_key`` together (many tenants' heads over one encoder; identical
texts once), and answers each request's future. Inference runs on these threads, never on the
event loop; ONNX Runtime releases the GIL, so ``threads`` inference threads keep as many cores
busy. ``max_batch=1`` turns batching off.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.backends import TextClassifier
from core.logging import log_event


@dataclass
class _Request:
    model: TextClassifier
    texts: Sequence[Any]  # strings, or decoded images (``core.images.DecodedImage``)
    future: Future[np.ndarray] = field(default_factory=Future)


_STOP = object()


def _key(item: Any) -> Any:
    """What makes two inputs identical: the text itself, or an image's content hash."""
    return item if isinstance(item, str) else item.sha256


class MicroBatcher:
    def __init__(self, *, max_batch: int = 64, wait_ms: float = 0.0, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads={threads}: an inference batcher needs 1 thread or more")
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000
        self.threads = threads
        self._queue: queue.Queue[object] = queue.Queue()
        self._count_lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"inference-{i}", daemon=True)
            for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, model: TextClassifier, texts: Sequence[Any]) -> Future[np.ndarray]:
        """A future of ``len(texts) x len(model.labels)`` probabilities."""
        request = _Request(model, texts)
        self._queue.put(request)
        return request.future

    def stop(self) -> None:
        self._queue.put(_STOP)  # each thread that sees it puts it back for the next
        for thread in self._threads:
            thread.join(timeout=5)

    def _share(self) -> int:
        """Texts the next batch takes at most: its share of what waits among the threads."""
        if self.threads == 1:
            return self.max_batch
        waiting = self._queue.qsize() + 1
        return max(1, min(self.max_batch, math.ceil(waiting / self.threads)))

    def _take_batch(
        self, first: _Request, *, concurrent: bool
    ) -> tuple[list[_Request], _Request | None]:
        """``first`` and whatever waits behind it, up to this thread's share of texts (a single
        larger request still runs, alone); and the request taken that did not fit, if any."""
        batch, size, limit = [first], len(first.texts), self._share()
        # A lone request last time means no concurrency: waiting would only add latency.
        wait = self.wait_s if concurrent else 0.0
        deadline = time.monotonic() + wait
        while size < limit:
            try:
                left = deadline - time.monotonic()
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            assert isinstance(item, _Request)
            if size + len(item.texts) > limit:
                return batch, item  # first in this thread's next batch
            batch.append(item)
            size += len(item.texts)
        return batch, None

    def _loop(self) -> None:
        held: _Request | None = None
        concurrent = True  # assume concurrency until a batch of one says otherwise
        while True:
            item: object  # a _Request, or _STOP
            if held is not None:
                item, held = held, None
            else:
                item = self._queue.get()
            if item is _STOP:
                self._queue.put(_STOP)
                return
            assert isinstance(item, _Request)
            batch, held = self._take_batch(item, concurrent=concurrent)
            concurrent = len(batch) > 1
            with self._count_lock:
                self.batches += 1
                self.requests += len(batch)
            groups: dict[str, list[_Request]] = defaultdict(list)
            for request in batch:
                groups[request.model.feature_key].append(request)
            for group in groups.values():
                self._run_group(group)

    @staticmethod
    def _run_group(group: list[_Request]) -> None:
        try:
            texts = [t for r in group for t in r.texts]
            keys = [_key(t) for t in texts]
            first = dict(zip(keys, texts, strict=True))  # identical inputs are encoded once
            unique = list(first.values())
            features = group[0].model.featurize(unique)
            if len(unique) < len(texts):
                row = {key: i for i, key in enumerate(first)}
                index = [row[k] for k in keys]
                if isinstance(features, np.ndarray):
                    features = features[index]
                else:
                    features = [features[i] for i in index]
        except Exception as e:  # noqa: BLE001 - every waiting request gets the error
            log_event("serving.batch_failed", error=repr(e))
            for r in group:
                r.future.set_exception(e)
            return
        start = 0
        for r in group:
            end = start + len(r.texts)
            try:
                r.future.set_result(r.model.predict_features(features[start:end]))
            except Exception as e:  # noqa: BLE001
                r.future.set_exception(e)
            start = end
