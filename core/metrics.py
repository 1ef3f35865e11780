"""In-process counters (``webhook.signature_failed{channel="slack"}``), exposed by the gateway at
``GET /v1/metrics`` in Prometheus' text format."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Counters", "counters"]


class Counters:
    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._lock = threading.Lock()

    def incr(self, name: str, amount: int = 1, **labels: str) -> None:
        with self._lock:
            self._counts[(name, tuple(sorted(labels.items())))] += amount

    def get(self, name: str, **labels: str) -> int:
        with self._lock:
            return self._counts[(name, tuple(sorted(labels.items())))]

    def prometheus(self) -> str:
        """``parley_<name with _ for .>{label="value"} count`` lines."""
        lines = []
        with self._lock:
            items = sorted(self._counts.items())
        for (name, labels), value in items:
            metric = "parley_" + name.replace(".", "_").replace("-", "_")
            label_text = ",".join(f'{k}="{v}"' for k, v in labels)
            lines.append(f"{metric}{{{label_text}}} {value}" if label_text else f"{metric} {value}")
        return "\n".join(lines) + "\n"


counters = Counters()
"""The process's counters."""
