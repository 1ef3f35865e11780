"""core.lru.Lru: the least recently used entry goes first, by count or by total size; a value
bigger than the whole cache is not kept; get_or_make makes a missing value once and keeps it."""

from __future__ import annotations

from core.lru import Lru


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2


def test_a_size_bound_counts_every_entry_and_skips_what_cannot_fit() -> None:
    cache: Lru[str, bytes] = Lru(10, size=len)
    cache.put("a", b"12345")
    cache.put("b", b"1234")
    cache.put("a", b"123")  # replaced: its old size no longer counts
    assert cache.total == 7
    cache.put("c", b"12345")  # 12 > 10: b, the least recently used, goes
    assert cache.get("b") is None and cache.total == 8
    cache.put("huge", b"x" * 11)
    assert cache.get("huge") is None and cache.get("a") == b"123"


def test_get_or_make_makes_a_missing_value_once() -> None:
    cache: Lru[int, str] = Lru(4)
    made: list[int] = []

    def make(n: int) -> str:
        made.append(n)
        return str(n)

    assert [cache.get_or_make(n % 2, lambda n=n: make(n % 2)) for n in range(4)] == list("0101")
    assert made == [0, 1]
