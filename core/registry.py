"""The one plug-in mechanism: a typed registry filled by decorators.

    intent_backends: Registry[IntentBackend] = Registry("intent backend")

    @intent_backends.register("embedding-head")
    class EmbeddingHeadIntentBackend(IntentBackend): ...

Parley's own plug-ins and third-party ones register through the ``parley.plugins`` entry point
group, whose modules are imported once, on the first look-up. A dotted path supplied by a
tenant is never imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import import_module
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from core.errors import UnknownPluginError

T = TypeVar("T")

__all__ = ["Registry", "load_entry_points"]


class Registry(Generic[T]):
    """Named plug-ins of one kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}

    def register_lazy(self, name: str, module: str) -> None:
        """``name`` is registered by importing ``module``, which happens on its first look-up
        (a plug-in whose imports are heavy and that most processes never use)."""
        self._lazy[name] = module

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        load_entry_points()
        if name not in self._items and name in self._lazy:
            import_module(self._lazy[name])
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownPluginError(
                f"unknown {self.kind} {name!r}; known: {known}", known=self.names()
            ) from None

    def names(self) -> list[str]:
        load_entry_points()
        return sorted({*self._items, *self._lazy})

    def items(self) -> Iterator[tuple[str, T]]:
        load_entry_points()
        return iter(sorted(self._items.items()))

    def __contains__(self, name: object) -> bool:
        load_entry_points()
        return name in self._items or name in self._lazy


_loaded = False


def load_entry_points() -> None:
    """Import third-party plug-in modules declared under ``parley.plugins`` (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group="parley.plugins"):
        ep.load()
