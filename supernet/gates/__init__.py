"""Gate methods: how each published method learns what matters. One file per method, registered by name.

A method owns its gates (masks, thresholds, predictors), a loss to train them on the frozen base weights,
and turns what it learned into plain data: importance scores per axis (to order the shared weights) and
*proposals* — subnet configs at several sparsity levels, for the search to start from. The driver
(``learn``) is the same for all of them, the way Optuna's study loop is unaware of its sampler.
"""
from __future__ import annotations

import abc
import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .. import distributed as ddp
from ..config import ConfigError, SubnetConfig
from ..space import IntAxis, KeepAxis
from .forward import Trace, gated_forward

METHODS: dict[str, type["GateMethod"]] = {}
STAGES = ("width", "tokens")  # the phase runs width methods, sandwich training, then token methods


@dataclass
class UnitCosts:
    """What one unit of each axis costs in the full model, in ms of measured latency (from the
    LatencyTable), so methods can be latency-aware rather than FLOPs-aware."""

    total: float        # the full model
    embed: float        # one embedding channel (across all blocks)
    head: float         # one head in one block
    qk: float           # one query/key channel of every head in one block
    v: float            # one value channel of every head in one block
    mlp: float          # one MLP unit in one block
    block: float        # one block
    conv_saving: float  # turning one block's MSA into conv (negative when conv is slower)


class GateMethod(nn.Module, metaclass=abc.ABCMeta):
    name: ClassVar[str]
    stage: ClassVar[str] = "width"   # one of STAGES: "width" orders the axes before sandwich training; "tokens" after
    steps: ClassVar[int] = 40
    lr: ClassVar[float] = 1e-2

    def __init__(self, sn, costs: UnitCosts):
        super().__init__()
        self.costs = costs

    def trainable(self, sn) -> list[nn.Parameter]:
        """Parameters the optimiser updates: the method's gates and any supernet parts it trains."""
        return [p for p in self.parameters() if p.requires_grad]

    @abc.abstractmethod
    def loss(self, sn, x: torch.Tensor, y: torch.Tensor, teacher: Trace) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_backward(self) -> None:
        """Called after each backward pass, before the optimiser step (NViT accumulates here)."""

    def importance(self) -> dict[str, torch.Tensor]:
        """Scores, higher = more important: any of "embed" [E], "heads" [D, H], "mlp" [D, M], "qk" and "v"
        [D, H, head_dim]."""
        return {}

    @abc.abstractmethod
    def proposals(self, sn) -> list[SubnetConfig]:
        raise NotImplementedError


def register_method(cls: type[GateMethod]) -> type[GateMethod]:
    if cls.stage not in STAGES:
        raise TypeError(f"gate method {cls.name}: stage {cls.stage!r} is not one of {STAGES}")
    METHODS[cls.name] = cls
    return cls


def build_method(name: str, sn, costs: UnitCosts) -> GateMethod:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods are {sorted(METHODS)} or 'all'")
    return METHODS[name](sn, costs).to(sn.vit.pos_embed.device)


def task_loss(student: torch.Tensor, teacher: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Labels plus distillation from the unpruned model's predictions."""
    from ..train import distill_loss
    return F.cross_entropy(student, y) + distill_loss(student, teacher)


def learn(sn, method: GateMethod, loader, steps: int | None = None, device="cpu", show: bool = True) -> list[dict]:
    """Train ``method``'s gates on ``sn``'s frozen base weights; returns the per-step logs."""
    steps = method.steps if steps is None else steps
    params = method.trainable(sn)
    synced = list({id(p): p for p in params + list(method.parameters())}.values())
    train_ids = {id(p) for p in params}
    requires = [(p, p.requires_grad) for p in sn.parameters()]
    for p, _ in requires:
        p.requires_grad_(id(p) in train_ids)
    opt = torch.optim.AdamW(params, lr=method.lr, weight_decay=0.0) if params else None
    sn.eval()  # the base model runs as deployed (no dropout); only the gates learn
    history = []
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    try:
        bar = tqdm(range(steps), desc=f"{method.name}", leave=False, disable=not (show and ddp.is_main()))
        for _ in bar:
            x, y = next(batches)
            x, y = ddp.shard(x).to(device), ddp.shard(y).to(device)
            with torch.no_grad():
                teacher = gated_forward(sn, x, taps=True)
            loss, logs = method.loss(sn, x, y, teacher)
            for p in synced:  # the method's gates and every trained part (what the optimiser holds)
                p.grad = None
            loss.backward()
            ddp.average_grads(synced)
            method.after_backward()
            if opt is not None:
                opt.step()
            logs = {k: ddp.average(float(v)) for k, v in {"loss": loss.item(), **logs}.items()}
            history.append(logs)
            bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items()})
    finally:
        for p, flag in requires:
            p.requires_grad_(flag)
    return history


# --- turning learned scores into configs -------------------------------------------------------------
def snap(axis: IntAxis, value: float) -> int:
    """The smallest allowed value >= ``value`` (never below the axis' minimum)."""
    return next((c for c in axis.choices if c >= value - 1e-9), axis.max)


def snap_keep(axis: KeepAxis, value: float) -> float:
    return next((c for c in axis.choices if c >= value - 1e-9), 1.0)


def global_counts(scores: torch.Tensor, keep: float, axis: IntAxis) -> list[int]:
    """Per-block counts under one global threshold that keeps a ``keep`` fraction of all units; of scores
    per head ([D, H, width]), the mean count per head (a block's heads share one width)."""
    flat = scores.flatten().float()
    k = max(1, math.ceil(keep * flat.numel()))
    threshold = flat.topk(k).values[-1]
    per_unit = scores[0].shape[0] if scores.dim() == 3 else 1
    return [snap(axis, int((row >= threshold).sum()) / per_unit) for row in scores]


def make_config(space, embed=None, depth=None, heads=None, mlp=None, ops=None, keep=None, qk=None,
                v=None) -> SubnetConfig:
    """A config from any subset of axes (the rest at their largest), cut to ``depth`` and validated."""
    big = space.largest()
    cfg = SubnetConfig(embed or big.embed_dim, big.depth, list(heads or big.heads), list(mlp or big.mlp),
                       list(ops or big.ops), list(keep or big.keep), list(qk or big.qk), list(v or big.v))
    return space.validate(cfg.first(depth or big.depth))


def unique(configs: list[SubnetConfig]) -> list[SubnetConfig]:
    seen, out = set(), []
    for c in configs:
        if c.key() not in seen:
            seen.add(c.key())
            out.append(c)
    return out


# registration order is the phase's order within a stage (each width method learns on the frozen base weights)
from . import vtp, vitslim, nvit, wdpruning, spvit, dynamicvit, patchslim  # noqa: E402,F401,I001  (register)
