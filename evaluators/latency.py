"""Measured latency: median wall-clock time of one forward pass, named by its runtime.

See DESIGN.md, "Latency": inference mode, warm-up, CPU threads pinned, CUDA synchronised, and
models compared in the same process, interleaved, because shared machines drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .runtimes import Runtime, get_runtime

_NO_CUDA = (
    "CUDA was requested but torch.cuda.is_available() is False on this machine; use --device cpu"
)


@dataclass(frozen=True)
class Latency:
    """One measured latency, with everything needed to say what was measured."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int
    runtime: str
    device: str
    batch_size: int
    threads: int
    dtype: str

    @property
    def spread_ms(self) -> float:
        """Width of the p10..p90 band: how noisy the measurement was."""
        return self.p90_ms - self.p10_ms

    def __str__(self) -> str:
        return (
            f"{_ms(self.median_ms)} ms (p10 {_ms(self.p10_ms)}, p90 {_ms(self.p90_ms)}; "
            f"{self.runtime}, {self.device}, batch {self.batch_size}, "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.dtype})"
        )


def _ms(value: float) -> str:
    """About three significant digits, so 0.07 ms and 700 ms both print meaningfully."""
    decimals = max(1, 2 - math.floor(math.log10(value))) if value > 0 else 1
    return f"{value:.{decimals}f}"


def resolve_device(name: str | torch.device) -> torch.device:
    """"cpu", "cuda", "cuda:N" or "auto" (cuda if available, else cpu) -> torch.device.

    Raises ValueError with one actionable line for a device this machine does not have.
    """
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ValueError(_NO_CUDA)
    if device.index is None:  # name the GPU actually used, so results say which one
        device = torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise ValueError(
            f"{device} requested but this machine has {torch.cuda.device_count()} GPU(s); "
            "use cuda:0 .. cuda:N-1"
        )
    return device


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    runtime: str = "torch-eager",
    dtype: torch.dtype = torch.float32,
) -> Latency:
    """Latency of one model; see `measure_latency_interleaved` for the arguments."""
    return measure_latency_interleaved(
        {"model": model}, input_shape, device, batch_size, threads, warmup, repeats, runtime, dtype
    )["model"]


def measure_latency_interleaved(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    threads: int | None = None,
    warmup: int = 10,
    repeats: int = 50,
    runtime: str = "torch-eager",
    dtype: torch.dtype = torch.float32,
) -> dict[str, Latency]:
    """Median per-call wall time of each model, timed round-robin so drift hits all equally.

    `input_shape` is one sample's shape (C, H, W); `batch_size` is prepended. Each round calls
    every model once, in an order rotated by one each round. Models run in eval mode (every
    module's training flag is restored afterwards) and are moved to `device`/`dtype` in place,
    as `nn.Module.to` does. `threads` (default: torch's current count) pins torch's CPU
    threads for the measurement and is restored afterwards.
    """
    if not models:
        raise ValueError("no models to measure")
    if batch_size < 1 or repeats < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise ValueError(
            f"need batch_size >= 1, repeats >= 1, warmup >= 0, threads >= 1; got {batch_size=}, "
            f"{repeats=}, {warmup=}, {threads=}"
        )
    dev = resolve_device(device)
    backend = get_runtime(runtime)
    previous_threads = torch.get_num_threads()
    threads = previous_threads if threads is None else threads
    # Per-module flags, not one model.training: a model may be deliberately part-train, part-eval.
    flags = {name: [m.training for m in model.modules()] for name, model in models.items()}
    # A private generator: measuring latency must not move the caller's global RNG stream.
    generator = torch.Generator().manual_seed(0)
    example = torch.randn((batch_size, *input_shape), generator=generator).to(dev, dtype)
    torch.set_num_threads(threads)
    try:
        calls = {}
        for name, model in models.items():
            model.eval()
            calls[name] = backend.prepare(model, example, dev, threads)
        names = list(calls)
        for _ in range(warmup):
            for name in names:
                calls[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(repeats):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(_time_call(calls[name], backend, dev))
    finally:
        torch.set_num_threads(previous_threads)
        for name, model in models.items():
            for module, flag in zip(model.modules(), flags[name]):
                module.training = flag

    def summarize(ms: list[float]) -> Latency:
        p10, median, p90 = np.percentile(ms, [10, 50, 90])
        return Latency(
            median_ms=float(median),
            p10_ms=float(p10),
            p90_ms=float(p90),
            repeats=repeats,
            runtime=runtime,
            device=str(dev),
            batch_size=batch_size,
            threads=threads,
            dtype=str(dtype).removeprefix("torch."),
        )

    return {name: summarize(ms) for name, ms in times.items()}


def _time_call(call: Callable[[], Any], backend: Runtime, device: torch.device) -> float:
    """Wall time of one call in ms, with the device idle before and drained after."""
    backend.synchronize(device)
    start = time.perf_counter()
    call()
    backend.synchronize(device)
    return (time.perf_counter() - start) * 1e3
