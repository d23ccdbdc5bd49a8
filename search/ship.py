"""The model a search hands over: the most accurate configs that met the budget, retrained with distillation,
re-measured in a fresh process, and the best one that still meets the budget written to ``<out>/best/``.

A config is measured in a fresh process before it is retrained, and its retrained model again after; what is held
against the budget is the mean of the two. Latency does not depend on the weights, so both measure one
architecture, and near the budget line two fresh processes disagree by a few % (README, "Latency, measured"):
judged on the second alone, a config at the line that measured within it was retrained and then refused about
as often as not. One over the budget is never retrained or shipped quietly: the run says so and ships the next
config that meets it (retraining it if need be); if none does, nothing is shipped and the run says that.
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


def fresh_before_retraining(p, cfg, folder: Path) -> dict:
    """``cfg``'s extracted model on shared weights, timed in a fresh process (``fresh_metrics``): asked before
    it is retrained, so a config over the budget costs no retrain (the widest uniform narrowing within the
    budget sits at its edge by construction). Saved apart from ``folder``, where the retrained model will be, so
    nothing takes these weights for retrained ones."""
    with tempfile.TemporaryDirectory(prefix=f"vitnas-before-{folder.name}-") as tmp:
        save_subnet(p.sn.extract(cfg).eval(), Path(tmp) / "model.safetensors")
        return fresh_metrics(p, Path(tmp))


def pooled(before: dict, after: dict) -> dict:
    """``after``'s fields, with the latency the mean of both fresh processes' ratios to the base."""
    runs = [{"when": when, "ratio_to_base": m["ratio_to_base"], "latency_ms": m["latency_ms"], "latency": m["latency"]}
            for when, m in (("before retraining", before), ("after retraining", after))]
    mean = lambda key: round((before[key] + after[key]) / 2, 4)  # noqa: E731
    return after | {"ratio_to_base": mean("ratio_to_base"), "latency_ms": mean("latency_ms"),
                    "measured_in": "two fresh processes, before and after retraining (mean)", "fresh_runs": runs}


def retrain_within(p, cfg, folder: Path, budget_ms: float, name: str, why: str, extra: dict | None = None,
                   epochs: int | None = None, log=print) -> dict | None:
    """``cfg`` timed in a fresh process; if it meets ``budget_ms``, retrained into ``folder`` and timed again. Its
    metrics (``extra`` added; the latency the mean of both, ``within_budget``), or None when it measured over the
    budget before retraining. Either way over the budget is said with ``!!``."""
    before = fresh_before_retraining(p, cfg, folder)
    if before["latency_ms"] > budget_ms:
        log(f"{LOUD} {name} measures {before['latency_ms']:.3g} ms in a fresh process, over the budget of "
            f"{budget_ms:.4g} ms: not retrained, not shipped")
        return None
    log(f"retraining {name} ({why})")
    metrics = retrain(p, cfg, folder, epochs=epochs, log=log)
    log(f"re-measuring {name} in a fresh process ({p.setting.describe()})")
    metrics |= pooled(before, fresh_metrics(p, folder)) | {"budget_ms": budget_ms} | (extra or {})
    metrics["within_budget"] = metrics["latency_ms"] <= budget_ms
    write_metrics(cfg, metrics, folder)
    said = (f"{name} measured {before['latency_ms']:.3g} ms before retraining and "
            f"{metrics['fresh_runs'][1]['latency_ms']:.3g} ms after, in fresh processes: {metrics['latency_ms']:.3g} ms "
            f"against the budget of {budget_ms:.4g} ms")
    log(said if metrics["within_budget"] else f"{LOUD} {said}: not shipped")
    return metrics


def ship(p, out: Path, budget_ms: float, top: int, log=print) -> dict | None:
    """Retrain the ``top`` most accurate Pareto configs within ``budget_ms`` by ``pooled_ms`` (more, one by one,
    while none of them meets the budget in a fresh process), and the best uniform narrowing within it (shared
    weights rank it below shapes that retrain worse: README, issue 13); write the most accurate retrained model
    that meets the budget (``retrain_within``: the mean of two fresh processes) to ``out/best/``. Returns its
    metrics, or None when none does."""
    front = pd.read_csv(out / "pareto.csv")
    if "pooled_ms" not in front or not len(front):
        log(f"{LOUD} nothing to ship: no config on the Pareto front")
        return None
    candidates = front[front["pooled_ms"] <= budget_ms].sort_values("val_top1", ascending=False)
    for column in ("retrained_val_top1", "retrained_test_top1", "fresh_ms"):
        front[column] = float("nan")
    fitting: list[dict] = []
    checked: set[int] = set()  # trials timed fresh, and retrained if they fitted

    def finish(row, why: str, uniform: bool = False) -> dict | None:
        trial = int(row["number"])
        checked.add(trial)
        metrics = retrain_within(p, config_of(row), out / f"retrain-trial{trial}", budget_ms, f"trial {trial}",
                                 why, {"trial": trial, "uniform_narrowing": uniform}, log=log)
        if metrics and metrics["within_budget"]:
            fitting.append(metrics)
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
        f"| model | val top-1 | test top-1 | latency ({setting.describe()}, fresh processes) | × base |",
        "|---|---|---|---|---|",
        f"| base model | {b['val_top1']:.1%} | {b['test_top1']:.1%} | {shipped['base_latency_ms']:.3g} ms | 1.00 |",
        f"| shipped, retrained | {shipped['val_top1']:.1%} | {shipped['test_top1']:.1%} | "
        f"{shipped['latency_ms']:.3g} ms | {shipped['ratio_to_base']:.2f} |",
        f"| same config on shared weights | {shipped['val_top1_before']:.1%} | {shipped['test_top1_before']:.1%} | "
        "| |", "",
        f"Budget {shipped['budget_ms']} ms; teacher: {shipped['teacher']}.", ""])
