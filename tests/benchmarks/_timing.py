"""Shared timing helper of the benchmarks (imported by file name: pytest puts this folder on
``sys.path`` because it is not a package)."""
from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], rounds: int = 3) -> float:
    """Minimum wall time of ``rounds`` calls of ``fn`` (the least disturbed measurement)."""
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
