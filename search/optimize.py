"""The outer loop: an Optuna study over the supernet's search space.

Every axis is a trial parameter, per-block ones suggested for all ``max_depth`` blocks in every trial
(fixed names such as ``heads_7``; those past the trial's depth are ignored) so NSGA-II's crossover sees
one intersection space. Two objectives — val top-1 on shared weights (max) and the extracted subnet's
measured latency (min) — and the budget as a constraint (measured − budget ≤ 0).
The latency table skips configs that cannot meet the budget; they are recorded as pruned trials with
their prediction, not dropped. Every completed trial stores its config and numbers as user attributes,
so the study describes itself in any Optuna tool.
"""
from __future__ import annotations

import os
import socket
from dataclasses import replace
from typing import Callable

import numpy as np
import optuna
from optuna.trial import FixedTrial, Trial

from evaluators import count_cost, evaluate_accuracy
from supernet import ConfigError, SubnetConfig

from .local_search import LocalSearchSampler, Predictions


# The budget is a trial constraint (``trial.set_constraint``, Optuna 5's successor of ``constraints_func``):
# feasibility then takes part in every sampler's choice of what to try next.
# Each is built from a seed and the study's ``Predictions`` (Optuna's own samplers do not use them).
SAMPLERS: dict[str, Callable[[int | None, Predictions], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda seed, predict: optuna.samplers.NSGAIISampler(seed=seed, population_size=20),
    "tpe": lambda seed, predict: optuna.samplers.TPESampler(seed=seed, multivariate=True),
    "random": lambda seed, predict: optuna.samplers.RandomSampler(seed=seed),
    "local": lambda seed, predict: LocalSearchSampler(predict, seed=seed, active=active_params),
}


# measured (README, "the outer loop"): on the bundled workload at 0.35/0.5/0.7x of the base, local search's own
# trials beat the phase's best proposal on shared weights at every budget; NSGA-II's never did
DEFAULT_SAMPLER = "local"


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")


def build_sampler(name: str, seed: int | None, predict: Predictions) -> optuna.samplers.BaseSampler:
    check_sampler(name)
    return SAMPLERS[name](seed, predict)


def predictions(space, latency: Callable[[SubnetConfig], float]) -> Predictions:
    """A sampler's view of ``space``: the config trial parameters make, its ``latency`` as the objective reports
    it (the latency table's prediction, in the same units), and its ``shape``."""
    configs: dict[tuple, SubnetConfig] = {}  # every trial's parameters are read again at every trial

    def config(params: dict) -> SubnetConfig:
        k = tuple(sorted(params.items()))
        if k not in configs:
            configs[k] = suggest_config(FixedTrial(params), space)
        return configs[k]
    return Predictions(key=lambda params: config(params).key(), latency=lambda params: latency(config(params)),
                       shape=lambda params: shape(config(params), space))


def shape(cfg: SubnetConfig, space) -> np.ndarray:
    """The fraction of the largest subnet ``cfg`` keeps on each axis, over its blocks on average and in its
    narrowest block (one over-pruned block costs the whole model's accuracy)."""
    qk, v = cfg.head_widths(space.qk.max)
    blocks = range(cfg.depth)
    per_block = np.array([[cfg.heads[i] * qk[i] / (space.heads.max * space.qk.max),
                           cfg.heads[i] * v[i] / (space.heads.max * space.v.max),
                           cfg.mlp[i] / space.mlp.max] for i in blocks])
    return np.r_[cfg.depth / space.depth.max, cfg.embed_dim / space.embed_dim.max, per_block.mean(0),
                 per_block.min(0), np.mean(cfg.keep), cfg.keep[-1], np.mean([op != "msa" for op in cfg.ops])]


def _suggest(trial: Trial, name: str, choices: list):
    """Ordered choices on a regular grid become int/float parameters (samplers use the order)."""
    steps = {round(b - a, 9) for a, b in zip(choices, choices[1:])}
    if len(steps) == 1 and isinstance(choices[0], int):
        return trial.suggest_int(name, choices[0], choices[-1], step=int(steps.pop()))
    if len(steps) == 1:
        return round(trial.suggest_float(name, choices[0], choices[-1], step=steps.pop()), 6)
    return trial.suggest_categorical(name, choices)


def suggest_config(trial: Trial, space) -> SubnetConfig:
    D = space.depth.max
    embed = _suggest(trial, "embed_dim", space.embed_dim.choices)
    depth = _suggest(trial, "depth", space.depth.choices)
    heads = [_suggest(trial, f"heads_{i}", space.heads.choices) for i in range(D)]
    mlp = [_suggest(trial, f"mlp_{i}", space.mlp.choices) for i in range(D)]
    ops = [trial.suggest_categorical(f"ops_{i}", list(space.ops)) for i in range(D)]
    keep = [_suggest(trial, f"keep_{i}", space.keep.choices) for i in range(D)]
    qk = [_suggest(trial, f"qk_{i}", space.qk.choices) for i in range(D)]
    v = [_suggest(trial, f"v_{i}", space.v.choices) for i in range(D)]
    return repair(SubnetConfig(embed, D, heads, mlp, ops, keep, qk, v).first(depth))


def repair(cfg: SubnetConfig) -> SubnetConfig:
    """Make independently sampled per-block values obey the space's rules: tokens once dropped stay
    dropped (running minimum of keep) and conv only before the first drop."""
    keep, ops, low = [], [], 1.0
    for k, op in zip(cfg.keep, cfg.ops):
        low = min(low, k)
        keep.append(low)
        ops.append(op if low >= 1.0 else "msa")
    return replace(cfg, ops=ops, keep=keep)


def config_params(cfg: SubnetConfig, space) -> dict:
    """The trial parameters that suggest ``cfg`` (blocks past its depth get the largest values)."""
    big = space.largest()
    params = {"embed_dim": cfg.embed_dim, "depth": cfg.depth}
    qk, v = cfg.head_widths(space.qk.max)
    for i in range(space.depth.max):
        inside = i < cfg.depth
        params[f"heads_{i}"] = cfg.heads[i] if inside else big.heads[i]
        params[f"qk_{i}"] = qk[i] if inside else big.qk[i]
        params[f"v_{i}"] = v[i] if inside else big.v[i]
        params[f"mlp_{i}"] = cfg.mlp[i] if inside else big.mlp[i]
        params[f"ops_{i}"] = cfg.ops[i] if inside else "msa"
        params[f"keep_{i}"] = cfg.keep[i] if inside else cfg.keep[-1]
    return params


def active_params(params: dict) -> set:
    """The parameters of ``suggest_config`` that change the config: per-block ones past the depth do not."""
    def block(name):
        head, _, index = name.rpartition("_")
        return int(index) if head and index.isdigit() else -1
    return {n for n in params if block(n) < params["depth"]}


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Objective:
    """Numbers for one trial; the study decides what to try next. Every measured trial also teaches the
    latency table (refit online), so the skip decision improves as the study runs."""

    def __init__(self, sn, table, meter, val_loader, budget_ms: float, input_shape, device):
        self.sn, self.table, self.meter, self.val = sn, table, meter, val_loader
        self.budget, self.shape, self.device = budget_ms, input_shape, device
        self.seen: dict[tuple, dict] = {}  # repaired configs repeat: measure each once per process

    def __call__(self, trial: Trial) -> tuple[float, float]:
        trial.set_user_attr("process", process_id())  # a rerun fails this trial if the process died with it
        cfg = suggest_config(trial, self.sn.space)
        self.sn.space.validate(cfg)
        predicted = self.table.predict(cfg)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("predicted_ms", round(predicted, 4))
        trial.set_user_attr("predicted_ratio", round(self.table.predict_ratio(cfg), 4))  # free of today's anchor
        factor = self.table.skip_factor()
        trial.set_user_attr("skip_factor", round(factor, 3))
        if predicted > factor * self.budget:
            trial.set_user_attr("skipped", "predicted latency over budget")
            trial.set_user_attr("constraint", predicted - self.budget)
            trial.set_constraint("latency_ms_over_budget", predicted - self.budget)
            raise optuna.TrialPruned(f"predicted {predicted:.2f} ms > {factor:.2f} × budget {self.budget} ms")
        attrs = self.seen.get(cfg.key()) or self._evaluate(cfg)
        self.seen[cfg.key()] = attrs
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        trial.set_constraint("latency_ms_over_budget", attrs["constraint"])
        return attrs["val_top1"], attrs["measured_ms"]

    def _evaluate(self, cfg: SubnetConfig) -> dict:
        model = self.sn.extract(cfg).eval()
        lat = self.meter.measure(model)
        self.table.add(cfg, lat.ratio)
        cost = count_cost(model, self.shape)
        acc = evaluate_accuracy(self.sn, self.val, cfg, self.device)
        # judged on the ratio to the base model at the run's base latency, not on the clock: the base model
        # measured 12.5 ms at a study's start and 14-25 ms during it on a busy 2-core machine
        latency = lat.at(self.table.base_ms)
        return {"val_top1": acc, "measured_ms": latency, "clock_ms": round(lat.median_ms, 4),
                "ratio_to_base": lat.ratio, "latency": str(lat), "runtime": lat.runtime, "dtype": lat.dtype,
                "flops": cost.flops, "params": cost.params, "constraint": latency - self.budget}
