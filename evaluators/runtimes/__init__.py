"""Runtimes: how a model is turned into something we can time (torch eager, torch.compile, CUDA graphs,
onnxruntime, OpenVINO).

A runtime prepares a model once and hands back a zero-argument callable that runs one forward pass on a
fixed example. The timing loop in ``evaluators.latency`` only ever calls that callable and ``synchronize``,
so adding a runtime is one new file here plus its import at the bottom. Each runtime declares the devices
and dtypes it runs and the package it needs; ``check`` turns a request it cannot serve into one line.
"""

from __future__ import annotations

import abc
import importlib.util
import warnings
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from supernet import ConfigError


class Runtime(abc.ABC):
    """Base class of a latency runtime; subclasses set the class attributes and implement ``prepare``."""

    name: ClassVar[str]
    summary: ClassVar[str]                                   # one line for --help
    dtypes: ClassVar[dict[str, tuple[str, ...]]] = {"cpu": ("float32",)}  # device type -> dtypes it runs
    package: ClassVar[str | None] = None                     # module it imports, if not torch
    install: ClassVar[str] = ""                              # how a user gets that package
    artefact: ClassVar[str | None] = None                    # file it runs, written into ``workdir``
    isolated: ClassVar[bool] = False                         # timed in a child process (see openvino.py)

    def check(self, device: torch.device, dtype: str) -> None:
        """Raise ConfigError (one line, what to do) if this runtime cannot time on ``device`` in ``dtype``."""
        if self.package and importlib.util.find_spec(self.package) is None:
            raise ConfigError(f"runtime {self.name} needs the {self.package} package, which is not installed; "
                              f"{self.install}")
        if device.type not in self.dtypes:
            raise ConfigError(f"runtime {self.name} runs on {' or '.join(self.dtypes)}, not {device.type}; "
                              f"use --runtime {'torch-eager' if device.type == 'cpu' else 'cudagraph'} "
                              f"or --device {next(iter(self.dtypes))}")
        if dtype not in self.dtypes[device.type]:
            raise ConfigError(f"runtime {self.name} on {device.type} runs "
                              f"{', '.join(self.dtypes[device.type])}, not {dtype}; pass --dtype "
                              f"{self.dtypes[device.type][0]}")

    @abc.abstractmethod
    def prepare(self, model: nn.Module, example: Tensor, threads: int, workdir: Path) -> Callable[[], Any]:
        """A zero-arg callable running one forward of ``model`` (eval mode) on ``example`` (already on its
        device, in the dtype to measure) with ``threads`` CPU threads. Files it needs go into ``workdir``."""

    def synchronize(self, device: torch.device) -> None:
        """Block until queued work on ``device`` is done, so wall time covers the whole call."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)


RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    RUNTIMES[cls.name] = cls
    return cls


def get_runtime(name: str) -> Runtime:
    """A fresh instance of the runtime called ``name``."""
    if name not in RUNTIMES:
        valid = ", ".join(sorted(RUNTIMES))
        raise ConfigError(f"unknown runtime {name!r}; valid runtimes: {valid}")
    return RUNTIMES[name]()


def export_onnx(model: nn.Module, example: Tensor, path: str | Path) -> Path:
    """One self-contained ONNX file of ``model`` at ``example``'s shape (float32, on CPU), by the first of
    ``ONNX_EXPORTERS`` whose file gives the model's output in onnxruntime on an input it was not exported with
    (a trace can bake in what it saw, and an exporter can be wrong without failing)."""
    model, example = model.to("cpu", torch.float32), example.to("cpu", torch.float32)
    check = torch.randn(example.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _first(model(check)).numpy()
    failures = []
    for exporter in ONNX_EXPORTERS:
        try:
            with warnings.catch_warnings():  # deprecation and tracer notes: nothing a user can act on
                warnings.simplefilter("ignore")
                exporter(model, example, str(path))
            got = _run_onnx(Path(path), check)
        except Exception as e:  # noqa: BLE001  (the next exporter may serve; all failures are reported)
            failures.append(f"{exporter.__name__.strip('_')}: {type(e).__name__}: {str(e).strip().splitlines()[0]}")
            continue
        if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-3, atol=1e-4):
            return Path(path)
        worst = np.abs(got - expected).max() if got.shape == expected.shape else f"shape {got.shape}"
        failures.append(f"{exporter.__name__.strip('_')}: its file's output differs from the model's ({worst})")
    raise ConfigError(f"no ONNX exporter exported this model faithfully ({'; '.join(failures)}); time it with "
                      "--runtime torch-eager")


def _first(output) -> Tensor:
    return output[0] if isinstance(output, (list, tuple)) else output


def _run_onnx(path: Path, x: Tensor) -> np.ndarray:
    """The file's output on ``x`` (on the CPU, one thread), in a session as the onnxruntime runtime makes it."""
    return get_runtime("onnxruntime").load(path, x, 1)()[0]


def _torchscript(model: nn.Module, example: Tensor, path: str) -> None:
    # Deprecated by torch since 2.9 but still there (2.15). On the bundled model it exported 13x faster than
    # torch.export's (median 0.27 s against 3.46 s, which was most of an onnxruntime trial), the same outputs,
    # and its file ran 1.2% slower in onnxruntime (median of 9 subnets, 0.2-1.9%; benchmarks/onnx_export.py).
    # A trace holds for other inputs only if nothing data-dependent runs in Python: top-k and gather are graph
    # operations here, and export_onnx checks the file on another input.
    torch.onnx.export(model, (example,), path, dynamo=False, verbose=False)


def _dynamo(model: nn.Module, example: Tensor, path: str) -> None:
    # torch's maintained exporter (torch.export); external_data=False keeps the weights in the one file
    torch.onnx.export(model, (example,), path, dynamo=True, external_data=False, verbose=False)


# tried in this order; the dynamo exporter serves once torch drops the TorchScript one
ONNX_EXPORTERS = (_torchscript, _dynamo)


class OnnxFileRuntime(Runtime):
    """A runtime that runs the model's ONNX export: ``prepare`` writes ``workdir/model.onnx`` and loads it."""

    artefact = "model.onnx"

    @abc.abstractmethod
    def load(self, path: Path, example: Tensor, threads: int) -> Callable[[], Any]:
        """A zero-arg callable running the ONNX file ``path`` on ``example``."""

    def prepare(self, model, example, threads, workdir):
        return self.load(export_onnx(model, example, Path(workdir) / self.artefact), example, threads)


# Imported last (they need the names above) so that importing this package registers the built-ins.
from . import compile, cudagraph, onnxruntime, openvino, torch_eager  # noqa: E402,F401
