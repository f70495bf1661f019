"""A bare timing loop for the profiling scripts (``benchmarks.variants``); the gate uses pytest-benchmark."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence


def time_pass(feed: Callable[[str], object], frames: Sequence[str]) -> int:
    """Return the ns one pass of ``feed`` over ``frames`` takes."""
    clock = time.perf_counter_ns
    started = clock()
    for frame in frames:
        feed(frame)
    return clock() - started


def loop_overhead_ns(frames: Sequence[str], repeats: int) -> float:
    """Return the per-frame ns of the timing loop itself (calling a no-op C builtin)."""
    return min(time_pass(len, frames) for _ in range(repeats)) / len(frames)
