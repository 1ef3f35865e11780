"""A small thread-safe least-recently-used cache for what one process keeps of its own work
(the gateway's rendered charts, image thumbnails, text embeddings): bounded by a total
``size`` (bytes, say) and/or a number of entries, the least recently used dropped first.

Nothing here is shared between processes; a value is what ``make`` gives for its key, so a
cache only saves doing the work again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Lru"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _one(_: object) -> int:
    return 1


class Lru(Generic[K, V]):
    """Values by key, the least recently used dropped once the entries' total ``size`` passes
    ``max_size`` (``size`` defaults to 1 an entry: a count). A value bigger than ``max_size``
    alone is not kept."""

    def __init__(self, max_size: int, *, size: Callable[[V], int] = _one) -> None:
        self.max_size = max_size
        self._size_of = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def total(self) -> int:
        """The kept entries' total size."""
        return self._total

    def get(self, key: K) -> V | None:
        """The value kept for ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` for ``key``, dropping the least recently used past ``max_size``."""
        size = self._size_of(value)
        if size > self.max_size:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._total -= self._size_of(old)
            self._items[key] = value
            self._total += size
            while self._total > self.max_size:
                _, dropped = self._items.popitem(last=False)
                self._total -= self._size_of(dropped)

    def get_or_make(self, key: K, make: Callable[[], V]) -> V:
        """The value kept for ``key``, else ``make()``'s (kept). ``make`` runs outside the
        lock: two threads missing the same key at once both make it."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value
