"""The timing loop, free of torch so that an isolated runtime's child process starts in half a second.

Models are timed interleaved in *blocks*: every round, each model runs one untimed call (the first after a
switch runs on caches the previous model filled, and on thread pools another runtime may still be
spinning) and then ``block`` consecutive timed calls; the order rotates each round.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any


def time_blocks(calls: Mapping[str, Callable[[], Any]], warmup: int, repeats: int, block: int,
                sync: Callable[[], None] = lambda: None, skip_first: bool = True) -> dict[str, list[float]]:
    """``repeats`` per-call wall times (ms) of each callable, after ``warmup`` untimed calls each."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(math.ceil(repeats / block)):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if skip_first:
                calls[name]()
            for _ in range(block):
                sync()
                start = time.perf_counter()
                calls[name]()
                sync()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: t[:repeats] for name, t in times.items()}
