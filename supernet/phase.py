"""The gradient phase: every chosen gate method learns on the base weights, their importances order the
shared weights (the weight-sharing contract), sandwich training makes many subnets good, then the token
predictors learn on the trained weights and the best token scorer is kept.

State is saved after every method and every sandwich epoch (rank 0, atomically), so an interrupted phase
resumes where it stopped; the result is one file holding the weights, the importances, every method's
proposals and the chosen scorer.
"""
from __future__ import annotations

import copy
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from . import distributed as ddp
from .config import ConfigError, SubnetConfig
from .gates import METHODS, STAGES, UnitCosts, build_method, learn
from .importance import Importance, magnitude_importance, reorder
from .storage import load_state, write_atomic
from .train import probe_batch, sandwich_update, seconds_per_step, train_supernet


def phase_order() -> list[str]:
    """Every registered method, stage by stage (width methods order the weights before sandwich training,
    token methods learn on the trained weights); within a stage, in registration order."""
    return [n for stage in STAGES for n, m in METHODS.items() if m.stage == stage]


def resolve_methods(spec: str | list[str]) -> list[str]:
    """``"all"``, one name, or a comma-separated list -> method names in the phase's order."""
    names = phase_order() if spec == "all" else ([spec] if isinstance(spec, str) else list(spec))
    names = [n.strip() for part in names for n in part.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ConfigError(f"unknown method {unknown[0] if unknown else spec!r}; choose 'all' or any of "
                          f"{phase_order()} (comma-separated)")
    return [n for n in phase_order() if n in names]


def _ranks(t: torch.Tensor) -> torch.Tensor:
    """Scores -> ranks in [0, 1] along the last axis (so methods with different scales can be averaged)."""
    r = t.float().argsort(dim=-1, stable=True).argsort(dim=-1, stable=True).float()
    return r / max(1, t.shape[-1] - 1)


def combine(sn, scores: list[dict[str, torch.Tensor]]) -> Importance:
    """One ordering per axis: the mean rank over the methods that score it (magnitude for the others)."""
    fallback = magnitude_importance(sn)
    axes = {}
    for axis, default in vars(fallback).items():
        given = [s[axis].cpu() for s in scores if axis in s]
        axes[axis] = (torch.stack([_ranks(t) for t in given]).mean(0) if given else
                      default.cpu() if axis == "embed" else torch.stack(default).cpu())
    return Importance(embed=axes.pop("embed"), **{axis: list(t) for axis, t in axes.items()})


def _save(path: Path, state: dict) -> None:
    if ddp.is_main():
        write_atomic(path, lambda tmp: torch.save(state, tmp))
    ddp.barrier()


def estimate_seconds(sn, loader, methods: list[str], costs: UnitCosts, epochs: int, n_random: int = 2,
                     device="cpu") -> float:
    """The phase's time from a few steps timed on one batch: each method's own step (on a copy of the
    supernet) times its step count, and a sandwich step per batch of every epoch."""
    x, y = (t.to(device) for t in probe_batch(loader))
    probe = copy.deepcopy(sn)
    seconds = 0.0
    for name in methods:
        with torch.random.fork_rng(devices=[]):
            method = build_method(name, probe, costs)
        seconds += METHODS[name].steps * seconds_per_step(lambda: learn(probe, method, [(x, y)], 1, device, False),
                                                          repeats=1)
    rng, opt = np.random.default_rng(0), torch.optim.AdamW(probe.parameters())
    # the step as trained; each call draws other random subnets (5 calls: their sizes vary)
    step = seconds_per_step(lambda: sandwich_update(probe, opt, x, y, rng, n_random), repeats=5)
    return seconds + epochs * len(loader) * step


def gradient_phase(sn, loader, methods: list[str], costs: UnitCosts, out: str | Path, meta: dict,
                   epochs: int, lr: float = 5e-4, n_random: int = 2, seed: int = 0, device="cpu",
                   evaluate: Callable[[SubnetConfig], float] | None = None, log=print) -> dict:
    """Run (or resume) the phase into ``out``; returns the saved result (also ``out/supernet.pt``).

    ``evaluate(cfg)`` (val top-1 on shared weights) picks the token scorer when token methods ran.
    """
    out = Path(out)
    sn.to(device)
    state_path = out / "phase.pt"
    state = {"meta": meta, "done": [], "proposals": {}, "importance": {}, "logs": {}, "reordered": False,
             "sandwich": False}
    saved = load_state(state_path, device, log, "the gradient phase starts over")
    if saved is not None:
        if saved["meta"] != meta:
            raise ConfigError(f"{state_path} belongs to another config or base model; pass another --out or "
                              "delete that folder to start over")
        sn.load_state_dict(saved.pop("supernet"))
        state = saved
        log(f"gradient phase: resuming from {state_path} (done: {', '.join(state['done']) or 'nothing'})")

    def run_method(name: str) -> None:
        torch.manual_seed(seed * 1000 + zlib.crc32(name.encode()) % 1000)  # the same whichever methods run
        method = build_method(name, sn, costs)
        history = learn(sn, method, loader, device=device)
        state["proposals"][name] = [c.to_dict() for c in method.proposals(sn)]
        state["importance"][name] = {k: v.cpu() for k, v in method.importance().items()}
        state["logs"][name] = last = history[-1] if history else {}
        state["done"].append(name)
        _save(state_path, {**state, "supernet": sn.state_dict()})
        log(f"{name}: {len(history)} steps, " + ", ".join(f"{k} {v:.3f}" for k, v in last.items()) +
            f"; {len(state['proposals'][name])} proposals")

    for name in methods:
        if METHODS[name].stage == "width" and name not in state["done"]:
            run_method(name)
    if not state["reordered"]:
        scores = [state["importance"][n] for n in state["done"] if state["importance"].get(n)]
        reorder(sn, combine(sn, scores))
        state["reordered"] = True
        _save(state_path, {**state, "supernet": sn.state_dict()})
        log("gradient phase: shared weights ordered by " + (", ".join(n for n in state["done"]
                                                                      if state["importance"].get(n)) or "magnitude"))
    if not state["sandwich"]:
        state["sandwich_history"] = train_supernet(sn, loader, epochs, lr, n_random=n_random, seed=seed,
                                                   checkpoint=out / "sandwich.pt", device=device, log=log)
        state["sandwich"] = True
        _save(state_path, {**state, "supernet": sn.state_dict()})
    for name in methods:
        if METHODS[name].stage == "tokens" and name not in state["done"]:
            run_method(name)

    scorers = {"cls_attention": []} | {METHODS[n].scorer: [] for n in state["done"] if METHODS[n].stage == "tokens"}
    token_configs = [SubnetConfig.from_dict(c) for n in state["done"] if METHODS[n].stage == "tokens"
                     for c in state["proposals"][n]]
    token_configs = [c for c in token_configs if min(c.keep) < 1.0]
    if len(scorers) > 1 and evaluate is not None and token_configs:
        bar = tqdm(total=len(scorers) * len(token_configs), desc="token scorers on val", unit="subnet", leave=False,
                   disable=not ddp.is_main())
        for name in scorers:
            sn.use_scorer(name)
            for cfg in token_configs:
                scorers[name].append(evaluate(cfg))
                bar.update()
        bar.close()
        best = max(scorers, key=lambda n: sum(scorers[n]))
        log("token scorers, mean val top-1 over the token proposals: " +
            ", ".join(f"{n} {sum(v) / len(v):.1%}" for n, v in scorers.items()) + f" -> {best}")
    else:
        best = sn.spec.scorer
    sn.use_scorer(best)
    result = {"meta": meta, "supernet": sn.state_dict(), "scorer": best, "proposals": state["proposals"],
              "importance": state["importance"], "logs": state["logs"],
              "scorer_val_top1": {n: v for n, v in scorers.items() if v},
              "sandwich_history": state.get("sandwich_history", [])}
    _save(out / "supernet.pt", result)
    return result


def load_phase(sn, path: str | Path, device="cpu", meta: dict | None = None) -> dict:
    """Load a finished phase into ``sn`` (weights and scorer); returns the saved result. With ``meta``,
    refuse a file made for another config or base model."""
    result = torch.load(path, map_location=device, weights_only=True)
    if meta is not None and result["meta"] != meta:
        raise ConfigError(f"{path} was trained for another config, base model or method set; pass another "
                          "--out or delete that folder")
    sn.load_state_dict(result["supernet"])
    sn.use_scorer(result["scorer"])
    return result


def proposals(result: dict) -> list[SubnetConfig]:
    """Every method's proposals, each config once, in the order the methods ran."""
    seen, configs = set(), []
    for name in result["proposals"]:
        for d in result["proposals"][name]:
            cfg = SubnetConfig.from_dict(d)
            if cfg.key() not in seen:
                seen.add(cfg.key())
                configs.append(cfg)
    return configs
