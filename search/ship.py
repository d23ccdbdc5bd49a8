"""The model a search hands over: the most accurate configs that met the budget, retrained with distillation,
re-measured in a fresh process, and the best one that still meets the budget written to ``<out>/best/``.

A config is measured in a fresh process before it is retrained, and its retrained model again after; one that
measures over the budget is never retrained or shipped quietly: the run says so and ships the next config that
meets it (retraining it if need be); if none does, nothing is shipped and the run says that.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import torch

from evaluators import evaluate_accuracy
from evaluators.runtimes import export_onnx

from .export import save_subnet
from .remeasure import fresh_metrics
from .results import config_of
from .retrain import retrain, write_metrics

LOUD = "!!"  # marks what a user must not miss in a long log


def base_accuracy(p) -> dict:
    """The base model's val and test top-1 (cached with a base trained here; else evaluated)."""
    return {s: p.workload.metrics.get(f"{s}_top1") or evaluate_accuracy(p.workload.model, p.workload.splits[s],
                                                                         device=p.device) for s in ("val", "test")}


def uniform_rival(p, trials: pd.DataFrame, budget_ms: float):
    """The most accurate uniformly narrowed trial of ``trials`` (a study's frame; ``run`` queues the two around
    the budget) measured within ``budget_ms``, or None."""
    if "depth" not in trials:
        return None
    done = trials[(trials["state"] == "COMPLETE") & trials["feasible"] & (trials["measured_ms"] <= budget_ms)]
    shapes = {c.key() for c in p.sn.space.uniform_shapes()}
    rivals = done[[config_of(r).key() in shapes for _, r in done.iterrows()]]
    return rivals.sort_values("val_top1", ascending=False).iloc[0] if len(rivals) else None


def fits_fresh(p, cfg, trial: int, budget_ms: float, log=print) -> bool:
    """Whether ``cfg``'s extracted model meets the budget in a fresh process, asked before retraining it: latency
    does not depend on the weights, and the configs at the budget's edge (the widest uniform narrowing within it
    is one by construction) re-measure over it often enough that a retrain spent on them was minutes lost."""
    with tempfile.TemporaryDirectory(prefix=f"vitnas-precheck-trial{trial}-") as tmp:
        save_subnet(p.sn.extract(cfg).eval(), Path(tmp) / "model.safetensors")
        ms = fresh_metrics(p, Path(tmp))["latency_ms"]
    if ms > budget_ms:
        log(f"{LOUD} trial {trial} measures {ms:.3g} ms in a fresh process, over the budget of {budget_ms} ms: "
            "not retrained, not shipped")
    return ms <= budget_ms


def ship(p, out: Path, budget_ms: float, top: int, log=print) -> dict | None:
    """Retrain the ``top`` most accurate Pareto configs that re-measured within ``budget_ms`` (more, one by one,
    while none of them meets the budget in a fresh process), and the best uniform narrowing within it (shared
    weights rank it below shapes that retrain worse: README, issue 13); write the most accurate retrained model
    that meets the budget in a fresh process to ``out/best/``. Returns its metrics, or None when none does."""
    front = pd.read_csv(out / "pareto.csv")
    if "remeasured_ms" not in front or not len(front):
        log(f"{LOUD} nothing to ship: no config on the Pareto front")
        return None
    candidates = front[front["remeasured_ms"] <= budget_ms].sort_values("val_top1", ascending=False)
    for column in ("retrained_val_top1", "retrained_test_top1", "fresh_ms"):
        front[column] = float("nan")
    fitting: list[dict] = []
    checked: set[int] = set()  # trials timed fresh, and retrained if they fitted

    def finish(row, why: str, uniform: bool = False) -> dict | None:
        trial = int(row["number"])
        checked.add(trial)
        folder, cfg = out / f"retrain-trial{trial}", config_of(row)
        if not fits_fresh(p, cfg, trial, budget_ms, log):
            return None
        log(f"retraining trial {trial} ({why})")
        metrics = retrain(p, cfg, folder, log=log)
        log(f"re-measuring trial {trial} in a fresh process ({p.setting.describe()})")
        metrics |= fresh_metrics(p, folder) | {"trial": trial, "budget_ms": budget_ms, "uniform_narrowing": uniform}
        metrics["within_budget"] = metrics["latency_ms"] <= budget_ms
        write_metrics(cfg, metrics, folder)
        if metrics["within_budget"]:
            fitting.append(metrics)
        else:
            log(f"{LOUD} trial {trial} re-measured {metrics['latency_ms']:.3g} ms in a fresh process, over the budget "
                f"of {budget_ms} ms: not shipped")
        return metrics

    for tried, (i, row) in enumerate(candidates.iterrows()):
        if tried >= top and fitting:
            break
        metrics = finish(row, f"{tried + 1} of {top if tried < top else 'the next, as none fitted yet'}")
        if metrics:
            front.loc[i, ["retrained_val_top1", "retrained_test_top1", "fresh_ms"]] = (
                metrics["val_top1"], metrics["test_top1"], metrics["latency_ms"])
    front.to_csv(out / "pareto.csv", index=False)
    rival = uniform_rival(p, pd.read_csv(out / "trials.csv"), budget_ms) if top else None
    if rival is not None and int(rival["number"]) not in checked:
        finish(rival, "the best uniform narrowing within the budget: the search's pick ships only if it retrains "
                      "better", uniform=True)
    best = out / "best"
    shutil.rmtree(best, ignore_errors=True)  # never leave an earlier run's model looking shipped
    if not fitting:
        log(f"{LOUD} no retrained config met the budget of {budget_ms} ms in a fresh process: nothing shipped "
            f"(best.yaml is the search's choice on shared weights)")
        return None
    shipped = max(fitting, key=lambda m: m["val_top1"])
    shutil.copytree(out / f"retrain-trial{shipped['trial']}", best)
    if not (best / "model.onnx").is_file():  # torch runtimes timed the module; ship its ONNX export too
        from .export import load_subnet
        export_onnx(load_subnet(best / "model.safetensors"), torch.zeros(1, *p.workload.input_shape),
                    best / "model.onnx")
    shipped["base"] = {f"{s}_top1": v for s, v in base_accuracy(p).items()}
    (best / "metrics.json").write_text(json.dumps(shipped, indent=1))
    return shipped


def comparison_markdown(shipped: dict, setting) -> str:
    """Base model vs the shipped model, one table: what the user gets."""
    b = shipped["base"]
    return "\n".join([
        f"## Shipped: trial {shipped['trial']}, retrained (best/)" + (
            ", uniform narrowing: it retrained better than the search's pick" if shipped.get("uniform_narrowing")
            else ""), "",
        f"| model | val top-1 | test top-1 | latency ({setting.describe()}, fresh process) | × base |",
        "|---|---|---|---|---|",
        f"| base model | {b['val_top1']:.1%} | {b['test_top1']:.1%} | {shipped['base_latency_ms']:.3g} ms | 1.00 |",
        f"| shipped, retrained | {shipped['val_top1']:.1%} | {shipped['test_top1']:.1%} | "
        f"{shipped['latency_ms']:.3g} ms | {shipped['ratio_to_base']:.2f} |",
        f"| same config on shared weights | {shipped['val_top1_before']:.1%} | {shipped['test_top1_before']:.1%} | "
        "| |", "",
        f"Budget {shipped['budget_ms']} ms; teacher: {shipped['teacher']}.", ""])
