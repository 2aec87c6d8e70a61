"""Run independent numpy-heavy steps side by side in threads.

numpy releases the GIL in its array loops, so attacks scored on the same arrays, or what-if variants,
overlap well on several cores without the copies a process pool would need.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def workers(jobs: int | None) -> int:
    """Threads to use for ``jobs`` (None: one per core)."""
    return max(1, jobs if jobs is not None else (os.cpu_count() or 1))


def thread_map(fn: Callable[[T], R], items: Sequence[T], jobs: int | None) -> list[R]:
    """``[fn(x) for x in items]``, in that order, on up to ``jobs`` threads; the first error is raised."""
    n = min(workers(jobs), len(items))
    if n <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, items))
