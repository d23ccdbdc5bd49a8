"""Data parallelism under ``torchrun``: each process takes a slice of every global batch, gradients are
averaged across processes before each optimiser step (gloo on CPU, nccl on GPU), rank 0 writes files.

Without ``torchrun`` every helper is a no-op, so the training code reads the same either way. The
gradient phase runs several subnets (and gate methods) of one set of shared weights per step; averaging
gradients explicitly after all their backward passes is what DDP's reducer would do, without its
one-forward-per-backward and unused-parameter rules.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .config import ConfigError


def init_from_env(device: torch.device) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def shard(t: torch.Tensor) -> torch.Tensor:
    """This process's equal slice of a global batch (the global batch size must divide evenly)."""
    n = world()
    if n == 1:
        return t
    if len(t) % n:
        raise ConfigError(f"a global batch of {len(t)} does not split evenly over {n} processes")
    size = len(t) // n
    return t[rank() * size:(rank() + 1) * size]


def average_grads(params) -> None:
    if world() == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world()


def average(value: float) -> float:
    """A logged number averaged over processes."""
    if world() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t) / world()


def barrier() -> None:
    if world() > 1:
        dist.barrier()
