"""TTLCache: entries expire after their time, a zero ttl remembers nothing, clear forgets all."""

from __future__ import annotations

import time

from openmaas._ttl_cache import TTLCache


def test_put_then_get() -> None:
    cache: TTLCache[str] = TTLCache(60)
    cache.put(("t", 1), "value")
    assert cache.get(("t", 1)) == "value"
    assert cache.get(("t", 2)) is None


def test_entries_expire() -> None:
    cache: TTLCache[int] = TTLCache(0.05)
    cache.put("k", 1)
    assert cache.get("k") == 1
    time.sleep(0.06)
    assert cache.get("k") is None


def test_zero_ttl_remembers_nothing() -> None:
    cache: TTLCache[int] = TTLCache(0)
    cache.put("k", 1)
    assert cache.get("k") is None


def test_clear_forgets_everything() -> None:
    cache: TTLCache[int] = TTLCache(60)
    for i in range(5):
        cache.put(i, i)
    cache.clear()
    assert all(cache.get(i) is None for i in range(5))


def test_size_is_bounded() -> None:
    cache: TTLCache[int] = TTLCache(60, max_entries=3)
    for i in range(3):
        cache.put(i, i)
    cache.put("new", 99)
    assert cache.get("new") == 99
    assert sum(cache.get(i) is not None for i in range(3)) < 3
