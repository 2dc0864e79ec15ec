"""Concurrency for the store contract tests: calls released together in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


def race[T](n: int, fn: Callable[[int], T]) -> list[T]:
    """Run fn(0..n-1) in n threads released together; re-raises any thread's exception."""
    barrier = threading.Barrier(n)

    def run(i: int) -> T:
        barrier.wait(timeout=5)
        return fn(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n), timeout=10))
