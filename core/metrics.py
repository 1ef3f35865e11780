"""In-process counters (``webhook.signature_failed{channel="slack"}``), exposed by the gateway at
``GET /v1/metrics`` in Prometheus' text format.

Per-tenant counters (``incr_tenant``: ``tenant.predictions{kind="intent",tenant="ten_1"}``)
keep their label sets bounded: the labels are the tenant and a kind only, and past
``MAX_TENANTS`` distinct tenants per counter the rest count as ``tenant="other"``."""

from __future__ import annotations

import threading
from collections import Counter

__all__ = ["Counters", "counters"]


class Counters:
    MAX_TENANTS = 1000
    """Distinct tenants one per-tenant counter labels; the others count as ``other``."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._tenants: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def incr(self, name: str, amount: float = 1, **labels: str) -> None:
        with self._lock:
            self._counts[(name, tuple(sorted(labels.items())))] += amount  # type: ignore[assignment]

    def incr_tenant(self, name: str, tenant_id: str, amount: float = 1, *, kind: str = "") -> None:
        """A per-tenant counter, labelled ``tenant`` and ``kind`` only (bounded, see above)."""
        with self._lock:
            seen = self._tenants.setdefault(name, set())
            if tenant_id not in seen:
                if len(seen) >= self.MAX_TENANTS:
                    tenant_id = "other"
                else:
                    seen.add(tenant_id)
            key = (name, (("kind", kind), ("tenant", tenant_id)))
            self._counts[key] += amount  # type: ignore[assignment]

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
