"""Measured latency: median wall-clock time of one forward pass, named by its runtime.

One ``LatencySetting`` (device, runtime, dtype, batch size, threads, warm-up, repeats, block) is built once
per command and passed to everything that measures; nothing else chooses these numbers.

How models are compared (DESIGN.md, "Latency"): shared machines drift, so every model is timed in the same
process as the one it is compared with, interleaved — in *blocks* of consecutive calls, not call by call.
Alternating call by call lets the larger model evict the smaller one's weights from the caches before
every call, which inflated a small subnet's latency against running it alone (``benchmarks/interleave.py``
measures it). Within a block the first call after a switch is not timed, for the same reason.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from supernet import ConfigError

from .runtimes import Runtime, export_onnx, get_runtime
from .runtimes.timing import time_blocks

_NO_CUDA = (
    "CUDA was requested but torch.cuda.is_available() is False on this machine; use --device cpu"
)
DTYPES = ("float32", "float16", "bfloat16")


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class LatencySetting:
    """Everything that decides what a latency figure means. Build it with ``resolve``."""

    device: str = "cpu"
    runtime: str = "torch-eager"
    dtype: str = "float32"
    batch_size: int = 1
    threads: int = 1
    warmup: int = 10     # untimed calls per model before the first block
    repeats: int = 60    # timed calls per model
    block: int = 5       # consecutive timed calls per model before switching to the next

    @classmethod
    def resolve(cls, device: str | torch.device = "auto", runtime: str = "auto", dtype: str = "float32",
                batch_size: int = 1, threads: int | None = None, warmup: int | None = None,
                repeats: int | None = None, block: int | None = None) -> "LatencySetting":
        """Check every value and fill the defaults: ``runtime="auto"`` is torch-eager on a CPU and cudagraph
        on a GPU; ``threads=None`` is torch's current count; warm-up, repeats and block default to the
        class's (the only place their defaults are written)."""
        warmup = cls.warmup if warmup is None else warmup
        repeats = cls.repeats if repeats is None else repeats
        block = cls.block if block is None else block
        dev = resolve_device(device)
        if runtime == "auto":
            runtime = "cudagraph" if dev.type == "cuda" else "torch-eager"
        if dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
        get_runtime(runtime).check(dev, dtype)
        for name, value, low in (("batch size", batch_size, 1), ("repeats", repeats, 1), ("block", block, 1),
                                 ("warm-up", warmup, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"latency {name} must be a whole number >= {low}, got {value!r}")
        cores = available_cores()
        threads = torch.get_num_threads() if threads is None else threads
        if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= cores:
            raise ConfigError(f"--threads must be between 1 and the {cores} CPU cores this process may use, "
                              f"got {threads!r}")
        return cls(str(dev), runtime, dtype, batch_size, threads, warmup, repeats, block)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def describe(self) -> str:
        """What a figure in this setting was measured in, e.g. 'onnxruntime, cpu, float32, batch 1, 2 threads'."""
        return (f"{self.runtime}, {self.device}, {self.dtype}, batch {self.batch_size}, "
                f"{self.threads} thread{'s' if self.threads != 1 else ''}")

    def identity(self) -> dict:
        """What makes two figures comparable (not how precisely they were taken): caches and studies key on it."""
        return {k: v for k, v in asdict(self).items() if k not in ("warmup", "repeats", "block")}


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
    ratio: float | None = None   # median / the reference model's median, timed in the same blocks
    setup_s: float = 0.0         # preparing the model (ONNX export, torch.compile, graph capture): never in ms

    def at(self, base_ms: float) -> float:
        """This latency with the reference model at ``base_ms`` (the run's figure for it): the ratio, timed in
        the same blocks as the reference, is what a drifting machine does not move."""
        return round(self.ratio * base_ms, 4)

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
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"unsupported device {name!r}; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ConfigError(_NO_CUDA)
    if device.index is None:  # name the GPU actually used, so results say which one
        device = torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"{device} requested but this machine has {torch.cuda.device_count()} GPU(s); "
            "use cuda:0 .. cuda:N-1"
        )
    return device


def example_input(setting: LatencySetting, input_shape: Sequence[int]) -> torch.Tensor:
    # A private generator: measuring latency must not move the caller's global RNG stream.
    x = torch.randn((setting.batch_size, *input_shape), generator=torch.Generator().manual_seed(0))
    return x.to(setting.torch_device, setting.torch_dtype)


class LatencyMeter:
    """Times models in one setting, each interleaved in blocks with a reference model (the base model a
    run compares everything with), which is prepared once and reused: every figure comes with its ratio
    to the reference measured in the same blocks, so machine drift cancels out of the ratio."""

    def __init__(self, setting: LatencySetting, input_shape: Sequence[int], reference: nn.Module | None = None,
                 workdir: str | Path | None = None):
        self.setting, self.input_shape = setting, tuple(input_shape)
        self.backend: Runtime = get_runtime(setting.runtime)
        self.example = example_input(setting, input_shape)
        self._tmp = tempfile.TemporaryDirectory(prefix="vitnas-latency-") if workdir is None else None
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)
        self._count = 0
        self.reference_latency: Latency | None = None  # the reference's figure in the last measurement
        self.reference = self._prepare(reference) if reference is not None else None

    def measure(self, model: nn.Module, workdir: str | Path | None = None) -> Latency:
        """One model, interleaved with the reference if there is one (``workdir`` keeps its artefact)."""
        return self.measure_many({"model": model}, workdir)["model"]

    def measure_reference(self) -> Latency:
        """The reference model alone."""
        times = self._time({"reference": self.reference})["reference"]
        return self._summarize(times, 1.0, self.reference[1])

    def measure_many(self, models: Mapping[str, nn.Module], workdir: str | Path | None = None) -> dict[str, Latency]:
        """With a reference: each model in its own pass, interleaved in blocks with the reference. Timing many
        models in one rotation inflated them: in onnxruntime every session keeps its own thread pool spinning
        after a run, and 15 of them made a 4.4 ms subnet read 13.4 ms. Without one: all interleaved."""
        if not models:
            raise ValueError("no models to measure")
        keep_in = Path(workdir) if workdir else None
        if self.reference is None:
            prepared = {name: self._prepare(model, keep_in) for name, model in models.items()}
            times = self._time(prepared)
            return {name: self._summarize(times[name], None, prepared[name][1]) for name in models}
        out, ref_times = {}, []
        for name, model in models.items():
            prepared = self._prepare(model, keep_in)
            times = self._time({"\0reference": self.reference, name: prepared})
            ref_times += times["\0reference"]
            out[name] = self._summarize(times[name], self._ratio(times[name], times["\0reference"]), prepared[1])
        self.reference_latency = self._summarize(ref_times, 1.0, self.reference[1])
        return out

    # --- internals ------------------------------------------------------------------------------
    def _prepare(self, model: nn.Module, keep_in: Path | None = None) -> tuple[Any, float]:
        """(a callable, or the artefact's path for an isolated runtime; setup seconds)."""
        self._count += 1
        folder = keep_in or self.workdir / f"m{self._count}"
        folder.mkdir(parents=True, exist_ok=True)
        model = _on(model, self.setting)
        start = time.perf_counter()
        with _threads(self.setting.threads):
            if self.backend.isolated:  # loaded and timed in a child process; only the file is made here
                prepared: Any = export_onnx(model, self.example, folder / self.backend.artefact)
            else:
                prepared = self.backend.prepare(model, self.example, self.setting.threads, folder)
        return prepared, time.perf_counter() - start

    def _time(self, prepared: dict[str, tuple[Any, float]]) -> dict[str, list[float]]:
        s = self.setting
        if self.backend.isolated:
            return self.backend.time_files({n: p for n, (p, _) in prepared.items()}, self.example, s)
        sync = lambda: self.backend.synchronize(s.torch_device)  # noqa: E731
        with _threads(s.threads):
            return time_blocks({n: p for n, (p, _) in prepared.items()}, s.warmup, s.repeats, s.block, sync)

    def _ratio(self, ms: list[float], ref: list[float]) -> float:
        return block_ratio(ms, ref, self.setting.block)

    def _summarize(self, ms: list[float], ratio: float | None, setup_s: float) -> Latency:
        p10, median, p90 = np.percentile(ms, [10, 50, 90])
        s = self.setting
        return Latency(float(median), float(p10), float(p90), len(ms), s.runtime, s.device, s.batch_size,
                       s.threads, s.dtype, ratio=None if ratio is None else round(ratio, 4),
                       setup_s=round(setup_s, 3))


def block_ratio(ms: Sequence[float], ref: Sequence[float], block: int) -> float:
    """Median over rounds of (a model's block median / the reference's block median in that round), for times
    from ``time_blocks``: a block and its neighbour run a fraction of a second apart, so drift and bursts of
    load cancel round by round."""
    rounds = [np.median(ms[i:i + block]) / np.median(ref[i:i + block]) for i in range(0, min(len(ms), len(ref)), block)]
    return float(np.median(rounds))


def measure_latency(model: nn.Module, input_shape: Sequence[int], setting: LatencySetting | None = None,
                    workdir: str | Path | None = None) -> Latency:
    """Latency of one model alone (``setting`` default: torch-eager on the CPU, torch's thread count)."""
    return LatencyMeter(setting or LatencySetting.resolve("cpu"), input_shape).measure(model, workdir)


def measure_latency_interleaved(models: Mapping[str, nn.Module], input_shape: Sequence[int],
                                setting: LatencySetting | None = None) -> dict[str, Latency]:
    """Latencies of several models timed interleaved in blocks, in one process."""
    return LatencyMeter(setting or LatencySetting.resolve("cpu"), input_shape).measure_many(models)


class _threads:
    """Pin torch's intra-op threads for a block of code and restore them afterwards."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


def _on(model: nn.Module, setting: LatencySetting) -> nn.Module:
    """``model`` in eval mode on the setting's device and dtype; a copy if it lives elsewhere, so measuring
    never changes the caller's model (its training flags included)."""
    p = next(iter(model.parameters()), None)
    placed = p is None or (p.device == setting.torch_device and p.dtype == setting.torch_dtype)
    if placed and not any(m.training for m in model.modules()):
        return model
    return copy.deepcopy(model).to(setting.torch_device, setting.torch_dtype).eval()
