"""Runtimes: how a model is turned into something we can time (eager torch, onnxruntime, ...).

A runtime prepares a model once and hands back a zero-argument callable that runs one forward
pass on a fixed example. The timing loop in `evaluators.latency` only ever calls that callable
and `synchronize`, so adding a runtime (CUDA graphs, TensorRT, ...) is one new file here.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn


class Runtime(abc.ABC):
    """Base class of a latency runtime; subclasses set `name` and implement `prepare`."""

    name: ClassVar[str]

    @abc.abstractmethod
    def prepare(
        self, model: nn.Module, example: Tensor, device: torch.device, threads: int
    ) -> Callable[[], Any]:
        """Return a zero-arg callable running one forward of `model` on `example` (already on
        `device`, in the dtype to measure). `model` is in eval mode; `threads` is the CPU
        thread count to use."""

    def synchronize(self, device: torch.device) -> None:
        """Block until queued work on `device` is done, so wall time covers the whole call."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)


RUNTIMES: dict[str, type[Runtime]] = {}


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make `cls` available under `cls.name`."""
    RUNTIMES[cls.name] = cls
    return cls


def get_runtime(name: str) -> Runtime:
    """A fresh instance of the runtime called `name`."""
    if name not in RUNTIMES:
        valid = ", ".join(sorted(RUNTIMES))
        raise ValueError(f"unknown runtime {name!r}; valid runtimes: {valid}")
    return RUNTIMES[name]()


# Imported last (they need the names above) so that importing this package registers the built-ins.
from . import onnxruntime, torch_eager  # noqa: E402,F401
