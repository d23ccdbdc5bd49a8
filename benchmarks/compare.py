"""The proof table (issue 15): every axis searched together against each seed method's axes alone, random
search and the gradient phase's proposals, at equal trials and equal fine-tuning, in each runtime; and how
fast each sampler finds the front.

    python benchmarks/compare.py [--config FILE] [--runtimes torch-eager,onnxruntime] [--budgets 0.7,0.5,0.35]
                                 [--trials 40] [--retrain-epochs N] [--hv-trials 60] [--hv-seeds 3] [--out DIR]
                                 [--quick]

Per runtime: the product's gradient phase (cached; one per measurement setting, as ``search run`` has it),
then per row and budget one study over that row's subspace of the trained supernet (the other axes at the base
model's values), the budget as its constraint, as ``search run`` has it. Rows:

- vitnas: every axis, the default sampler, as ``search run`` has it: the uniform narrowings around the budget and
  the phase's proposals queued first, the best uniform narrowing retrained next to the winner, the better kept;
- each seed method's axes alone, its proposals queued first: tokens with the DynamicViT scorer, tokens with
  the Patch Slimming scorer, heads + head widths + MLP (ViT-Slim, NViT), embedding (VTP), depth with exits
  (WDPruning), MSA→conv (SPViT). They share the all-method phase's ordering and sandwich-trained weights: a
  phase per method would cost seven phases per runtime; the rows measure what each method's *axes* are worth;
- random search: every axis, Optuna's RandomSampler, no proposals;
- phase proposals: only the gradient phase's proposals, evaluated the same way, no Optuna loop.

Per row and budget: the front's configs re-measured interleaved with the base; those within the budget are then
handled, most accurate first, as ``search run`` ships (``search.ship.retrain_within``): timed in a fresh process,
retrained with the product's recipe if it fits (``--retrain-epochs`` for every row alike) and timed again, its
latency the mean of the two; the next is tried while none fits. Search efficiency: hypervolume of the front
within the middle budget (val top-1 against the predicted latency ratio, the budget as the constraint and the
reference, the phase's proposals queued first, as ``search run`` has it) against trial count, for every
registered sampler, ``--hv-seeds`` seeds each, on the first runtime; accuracy there on the first ``--hv-val``
val images (a subset makes the studies affordable).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import optuna
import torch
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators import correct_per_image, count_cost, evaluate_accuracy, paired_gap  # noqa: E402
from evaluators.data import error_groups  # noqa: E402
from evaluators.lut import hardware_name  # noqa: E402
from search.export import load_subnet  # noqa: E402
from search.local_search import hypervolume  # noqa: E402
from search.optimize import (DEFAULT_SAMPLER, SAMPLERS, Objective, build_sampler, config_params,  # noqa: E402
                             predictions, suggest_config)
from search.results import config_of, pareto_front, trials_frame  # noqa: E402
from search.run import uniform_near  # noqa: E402
from search.setup import ensure_supernet, phase_dir, prepare, use_scorer_table  # noqa: E402
from search.ship import LOUD, retrain_within, uniform_rival  # noqa: E402
from search.study import run_trials  # noqa: E402
from supernet.phase import proposals, resolve_methods  # noqa: E402
from supernet.space import IntAxis, KeepAxis  # noqa: E402

WIDTHS = ("embed_dim", "depth", "heads", "qk", "v", "mlp")


@dataclass(frozen=True)
class Row:
    name: str
    axes: frozenset | None = None   # the axes searched; None: every axis
    methods: tuple = ()             # whose phase proposals are queued first; "all": every method's
    scorer: str | None = None       # token scorer; None: the one the phase chose
    sampler: str = DEFAULT_SAMPLER
    loop: bool = True               # False: the queued proposals only
    uniform: bool = False           # as ``search run``: uniform narrowings around the budget queued first, the best
                                    # of them retrained next to the winner and the better by val kept


ROWS = [
    Row("vitnas, every axis", methods=("all",), uniform=True),
    Row("tokens (DynamicViT)", frozenset({"keep"}), ("dynamicvit",), scorer="dynamicvit"),
    Row("tokens (Patch Slimming)", frozenset({"keep"}), ("patchslim",), scorer="patchslim"),
    Row("heads, head widths, MLP (ViT-Slim, NViT)", frozenset({"heads", "qk", "v", "mlp"}), ("vitslim", "nvit")),
    Row("embedding (VTP)", frozenset({"embed_dim"}), ("vtp",)),
    Row("depth with exits (WDPruning)", frozenset({"depth"}), ("wdpruning",)),
    Row("MSA→conv (SPViT)", frozenset({"ops"}), ("spvit",)),
    Row("random search, every axis", sampler="random"),
    Row("phase proposals, no Optuna", methods=("all",), loop=False),
]


def subspace(space, axes):
    """``space`` with every axis outside ``axes`` fixed at the base model's value."""
    if axes is None:
        return space
    fixed = {n: IntAxis(getattr(space, n).max, getattr(space, n).max, getattr(space, n).step)
             for n in WIDTHS if n not in axes}
    if "keep" not in axes:
        fixed["keep"] = KeepAxis(min=1.0, step=1.0)
    if "ops" not in axes:
        fixed["ops"] = ("msa",)
    return replace(space, **fixed)


@contextlib.contextmanager
def searching(p, row: Row):
    """The prepared run narrowed to ``row``: its token scorer (and that scorer's latency table), its subspace."""
    space, scorer, table = p.sn.space, p.sn.spec.scorer, p.table
    if row.scorer:
        p.sn.use_scorer(row.scorer)
        use_scorer_table(p, log=lambda *a: None)  # (keyed by the full space: before narrowing it)
    p.sn.space = subspace(space, row.axes)
    try:
        yield
    finally:
        p.sn.space, p.table = space, table
        p.sn.use_scorer(scorer)


def row_proposals(p, phase: dict, row: Row) -> list:
    """The row's methods' phase proposals that lie in its subspace, each once."""
    names = list(phase["proposals"]) if "all" in row.methods else [m for m in row.methods if m in phase["proposals"]]
    inside = []
    for cfg in proposals({"proposals": {n: phase["proposals"][n] for n in names}}):
        try:
            inside.append(p.sn.space.validate(cfg))
        except ValueError:  # varies an axis this row keeps at the base model's value
            pass
    return inside


def search_row(p, phase: dict, row: Row, trials: int, budget: float) -> tuple:
    """(trials frame, seconds) of one study of ``row`` under the loosest budget (a ratio of the base)."""
    sampler = build_sampler(row.sampler, 0, predictions(p.sn.space, p.table.predict))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    queued = row_proposals(p, phase, row) if row.methods else []
    if row.uniform:
        queued = uniform_near(p, budget * p.base_latency.median_ms) + queued
    for cfg in queued[:trials]:
        study.enqueue_trial(config_params(cfg, p.sn.space), skip_if_exists=True)
    n = min(trials, len(queued)) if not row.loop else trials
    objective = Objective(p.sn, p.table, p.meter, p.workload.splits["val"], budget * p.base_latency.median_ms,
                          p.workload.input_shape, p.device)
    start = time.perf_counter()
    if n:
        run_trials(study, objective, n, None, show=True)
    return trials_frame(study.trials), time.perf_counter() - start


def picks(p, df, budget: float) -> list[tuple]:
    """The front configs within ``budget`` by the mean of the study's ratio and a re-measurement interleaved with the
    base (as ``write_results`` judges), most accurate first: (config, val top-1 on shared weights, re-measured
    ratio), the order ``search run`` tries them in when shipping."""
    front = pareto_front(df) if "depth" in df else df.iloc[0:0]
    configs = [config_of(r) for _, r in front.iterrows()]
    if not configs:
        return []
    again = p.meter.measure_many({str(i): p.sn.extract(c).eval() for i, c in enumerate(configs)})
    fits = [i for i in range(len(configs)) if (front.iloc[i]["ratio_to_base"] + again[str(i)].ratio) / 2 <= budget]
    fits.sort(key=lambda i: -front.iloc[i]["val_top1"])
    once = {configs[i].key(): i for i in reversed(fits)}  # a config two trials share (repaired configs repeat)
    return [(configs[i], float(front.iloc[i]["val_top1"]), again[str(i)].ratio)
            for i in fits if once[configs[i].key()] == i]


def efficiency(p, phase: dict, budget: float, trials: int, seeds: int, val_images: int, out: Path) -> dict:
    """Hypervolume within ``budget`` after each trial, per sampler and seed (accuracy on a val subset, predicted
    latency; the phase's proposals first, as ``search run`` queues them)."""
    val = p.workload.splits["val"]
    val = Subset(val, range(min(val_images, len(val))))
    accuracy: dict = {}  # the same config is evaluated once for every study: one objective, one value

    def objective(trial):
        cfg = suggest_config(trial, p.sn.space)
        ratio = p.table.predict_ratio(cfg)
        trial.set_constraint("latency_ms_over_budget", ratio - budget)
        if cfg.key() not in accuracy:
            accuracy[cfg.key()] = evaluate_accuracy(p.sn, val, cfg, p.device)
        return accuracy[cfg.key()], ratio

    queued = [config_params(cfg, p.sn.space) for cfg in proposals(phase)[:trials]]
    predict = predictions(p.sn.space, p.table.predict_ratio)  # the objective's latency is the predicted ratio
    curves: dict = {}
    best_within: dict = {}  # the most accurate config within the budget so far: what a search run ships
    for sampler in SAMPLERS:
        for seed in range(seeds):
            study = optuna.create_study(directions=["maximize", "minimize"],
                                        sampler=build_sampler(sampler, seed, predict))
            for params in queued:
                study.enqueue_trial(params, skip_if_exists=True)
            study.optimize(objective, n_trials=trials, show_progress_bar=True)
            values = [t.values for t in study.trials]
            curves.setdefault(sampler, []).append([hypervolume(values[:n + 1], budget) for n in range(len(values))])
            within = np.maximum.accumulate([a if r <= budget else 0.0 for a, r in values])
            best_within.setdefault(sampler, []).append(within.tolist())
    best = max(c[-1] for runs in curves.values() for c in runs)
    median = {s: np.median(np.array(runs), axis=0) for s, runs in curves.items()}

    def reach(curve, level):  # None also when the level is nothing (no trial within the budget yet)
        hit = np.nonzero(curve >= level)[0]
        return int(hit[0]) + 1 if len(hit) and level > 0 else None
    table = {s: {"final_median": float(m[-1]), "reaches_95pct_of_best": reach(m, 0.95 * best),
                 "reaches_random_final": reach(m, median["random"][-1]),
                 "best_within_budget_median": float(np.median([runs[-1] for runs in best_within[s]]))}
             for s, m in median.items()}
    plot_efficiency(curves, out / "hypervolume.png", p.setting.describe(), budget)
    return {"curves": {s: [list(map(float, c)) for c in runs] for s, runs in curves.items()}, "best": best,
            "best_within": best_within,
            "table": table, "evaluated_configs": len(accuracy), "budget": budget,
            "queued_proposals": len(queued)}


def plot_efficiency(curves: dict, path: Path, latency: str, budget: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for sampler, runs in curves.items():
        a = np.array(runs)
        x = np.arange(1, a.shape[1] + 1)
        ax.plot(x, np.median(a, axis=0), label=f"{sampler} (median of {len(runs)})")
        ax.fill_between(x, a.min(axis=0), a.max(axis=0), alpha=0.2)
    ax.set_xlabel("trials")
    ax.set_ylabel(f"hypervolume within {budget:g}× the base\n(val top-1 × predicted latency saved, {latency})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_rows(rows: list[dict], base_test: float, path: Path, latency: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name in dict.fromkeys(r["row"] for r in rows):
        pts = [(r["fresh_ratio"], r["test_after"] * 100) for r in rows if r["row"] == name and r.get("fresh_ratio")]
        if pts:
            ax.plot(*zip(*sorted(pts)), "o-" if name.startswith("vitnas") else "o--", label=name,
                    lw=2.5 if name.startswith("vitnas") else 1)
    ax.scatter([1.0], [base_test * 100], marker="*", s=180, c="k", label="base model", zorder=3)
    ax.set_xlabel(f"latency, × the base model (fresh processes, {latency})")
    ax.set_ylabel("test top-1 after retraining, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare_runtime(args, runtime: str, budgets: list[float], out: Path) -> dict:
    """Every row in one runtime: studies, winners, retrains, fresh-process measurements."""
    p = prepare(args.config, runtime=runtime, threads=args.threads, device=args.device, log=print)
    phase = ensure_supernet(p, log=print)
    if args.quick:  # retrains that only show the pipeline runs (the phase above trained on every image)
        train = p.workload.splits["train"]
        p.workload.splits["train"] = Subset(train, range(0, len(train), 16))
    report = phase_dir(p, resolve_methods(p.config["supernet"]["method"])) / "train.json"
    phase_s = json.loads(report.read_text())["seconds"] if report.is_file() else None
    epochs = args.retrain_epochs or p.config["retrain"]["epochs"]

    def loud(said: str) -> None:  # a row's retrain is quiet, but not about the budget
        if said.startswith(LOUD):
            print(f"[{runtime}] {said}", flush=True)

    retrained: dict = {}  # (scorer, config) -> its retrained metrics: a config is retrained once, whatever the budget
    # each row is kept as it finishes and a re-run with the same settings goes on from there: a run of one runtime
    # takes 1-2 h here, and a killed one kept nothing
    kept = out / runtime / "rows.json"
    same = {k: vars(args)[k] for k in ("config", "trials", "retrain_epochs", "quick", "device", "threads")}
    saved = json.loads(kept.read_text()) if kept.is_file() else {}
    rows = saved["rows"] if saved.get("args") == same else []
    if rows:
        print(f"[{runtime}] {len(rows)} row(s) kept in {kept} from an earlier run with these settings", flush=True)
    kept.parent.mkdir(parents=True, exist_ok=True)

    def keep(entry: dict) -> None:  # a finished row, written at once
        rows.append(entry)
        kept.write_text(json.dumps({"args": same, "rows": rows}, indent=1))

    for row in ROWS if args.trials else []:  # --trials 0: the search-efficiency study alone
        with searching(p, row):
            for r in budgets:  # a study per budget, as ``search run`` has it (its sampler works near the budget)
                if any(x["row"] == row.name and x["budget"] == r for x in rows):
                    continue
                df, search_s = search_row(p, phase, row, args.trials, r)
                ranked = picks(p, df, r)
                measured = int((df["state"] == "COMPLETE").sum()) if len(df) else 0
                entry = {"runtime": runtime, "row": row.name, "budget": r, "trials": len(df), "measured": measured,
                         "search_s": search_s}
                rival = uniform_rival(p, df, r * p.base_latency.median_ms) if row.uniform else None
                if rival is not None:
                    rival = (config_of(rival), float(rival["val_top1"]),
                             float(rival["measured_ms"]) / p.base_latency.median_ms)
                if not ranked and rival is None:
                    keep(entry | {"met": False, "why": "nothing measured within the budget"})
                    print(f"[{runtime}] {row.name} at {r:g}×: nothing measured within the budget", flush=True)
                    continue
                budget_ms = r * p.base_latency.median_ms
                tried: list[tuple] = []  # (candidate, its retrained metrics), in the order tried

                def finish(candidate) -> dict | None:  # as ``search run`` ships: timed fresh, retrained if within, again
                    cfg = candidate[0]
                    key = (p.sn.spec.scorer, cfg.key())
                    if key not in retrained:
                        folder = (out / runtime / f"retrain-{len(rows)}-{len(retrained)}").resolve()
                        m = retrain_within(p, cfg, folder, budget_ms, f"{row.name} at {r:g}×", "its pick",
                                           epochs=epochs, log=loud)
                        if m is None:  # over the budget before retraining (another budget may take it)
                            return None
                        cost = count_cost(p.sn.extract(cfg), p.workload.input_shape)
                        retrained[key] = m | {"flops": cost.flops, "params": cost.params, "folder": str(folder)}
                    m = retrained[key] | {"within_budget": retrained[key]["latency_ms"] <= budget_ms}
                    tried.append((candidate, m))
                    return m

                for candidate in ranked:  # the next, while none fits (``ship`` with --retrain-top 1)
                    m = finish(candidate)
                    if m and m["within_budget"]:
                        break
                if rival is not None and rival[0].key() not in {c[0].key() for c, _ in tried}:
                    finish(rival)
                if not tried:
                    keep(entry | {"met": False, "why": "over the budget in a fresh process before retraining"})
                    continue
                # as ``ship``: the best by val of those that meet the budget (a tie: the one tried first)
                (cfg, val_shared, remeasured), m = max(tried, key=lambda t: (
                    t[1]["within_budget"], t[1]["val_top1"], t is tried[0]))
                uniform = row.uniform and cfg.key() in {c.key() for c in p.sn.space.uniform_shapes()}
                entry |= {"met": m["within_budget"], "config": cfg.to_dict(), "val_shared": val_shared,
                          "uniform_narrowing": uniform, "remeasured_ratio": remeasured, "fresh_ratio": m["ratio_to_base"],
                          "fresh_ms": m["latency_ms"], "val_before": m["val_top1_before"],
                          "test_before": m["test_top1_before"], "val_after": m["val_top1"],
                          "test_after": m["test_top1"], "retrained": len(tried),
                          "retrain_s": sum(a["seconds"] for _, a in tried),
                          "flops": m["flops"], "params": m["params"], "retrain_dir": m["folder"]}
                keep(entry)
                print(f"[{runtime}] {row.name} at {r:g}×: test {entry['test_before']:.1%} -> "
                      f"{entry['test_after']:.1%}, {entry['fresh_ratio']:.2f}× in fresh processes"
                      + (" (a uniform narrowing)" if uniform else "")
                      + ("" if entry["met"] else " (over the budget)"), flush=True)
    base_test = p.workload.metrics.get("test_top1") or evaluate_accuracy(p.workload.model,
                                                                         p.workload.splits["test"], device=p.device)
    if rows:
        plot_rows(rows, base_test, out / runtime / "compare.png", p.setting.describe())
    gaps = {r: paired_test_gap(p, *pair) for r in budgets if (pair := vitnas_and_best_other(rows, r))}
    return {"setting": p.setting.describe(), "base_ms": p.base_latency.median_ms, "base_test": base_test,
            "phase_s": phase_s, "rows": rows, "gaps": gaps, "prepared": p, "phase": phase}


def vitnas_and_best_other(rows: list[dict], budget: float) -> tuple[dict, dict] | None:
    """vitnas's shipped row at ``budget`` and the other row with the best retrained test top-1, when both shipped."""
    shipped = [x for x in rows if x["budget"] == budget and x.get("met")]
    ours = next((x for x in shipped if x["row"] == ROWS[0].name), None)
    others = [x for x in shipped if x["row"] != ROWS[0].name]
    return (ours, max(others, key=lambda x: x["test_after"])) if ours and others else None


def paired_test_gap(p, ours: dict, other: dict) -> dict:
    """``evaluators.paired_gap`` of vitnas's retrained model against the other row's on the test split."""
    test = p.workload.splits["test"]
    right = [correct_per_image(load_subnet(Path(x["retrain_dir"]) / "model.safetensors"), test) for x in (ours, other)]
    gap = paired_gap(*right, error_groups(p.config["data"], "test", len(test)))
    return {"other": other["row"], "only_ours": gap.pop("only_a"), "only_other": gap.pop("only_b")} | gap


def print_runtime(result: dict, budgets: list[float]) -> list[str]:
    """The runtime's table (markdown), and a line per budget on the target: vitnas ≥ 1 point above every row."""
    print(f"\n### {result['setting']}: base {result['base_ms']:.2f} ms, test {result['base_test']:.1%}; gradient "
          f"phase {'%.0f s' % result['phase_s'] if result['phase_s'] else 'cached'}\n")
    print("| budget | row | trials (measured) | × base, fresh processes | MFLOPs | params | val: shared → retrained "
          "| test: shared → retrained | search + retrain |")
    print("|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for r in budgets:
        rows = [x for x in result["rows"] if x["budget"] == r]
        for x in rows:
            if "config" not in x:
                print(f"| {r:g}× | {x['row']} | {x['trials']} ({x['measured']}) | {x['why']} "
                      f"| | | | | {x['search_s'] / 60:.1f} min |")
                continue
            over = "" if x["met"] else " **over**"
            print(f"| {r:g}× | {x['row']} | {x['trials']} ({x['measured']}) | {x['fresh_ratio']:.2f}{over} | "
                  f"{x['flops'] / 1e6:.1f} | {x['params'] / 1e6:.2f} M | {x['val_before']:.1%} → {x['val_after']:.1%} "
                  f"| {x['test_before']:.1%} → {x['test_after']:.1%} | {x['search_s'] / 60:.1f} + "
                  f"{x['retrain_s'] / 60:.1f} min |")
        runtime = result['setting'].split(',')[0]
        if not any(x["row"] == ROWS[0].name and x.get("met") for x in rows):
            verdicts.append(f"{runtime} at {r:g}×: vitnas shipped nothing within the budget")
        elif pair := vitnas_and_best_other(rows, r):
            ours, best = pair
            g = result["gaps"][r]
            verdicts.append(f"{runtime} at {r:g}×: vitnas {ours['test_after']:.1%}, best other row {best['row']} "
                            f"{best['test_after']:.1%}: {g['gap']:+.1f} points ({'met' if g['gap'] >= 1 else 'missed'}: "
                            f"target ≥ +1); {g['only_ours']} test images only vitnas's model gets right, "
                            f"{g['only_other']} only the other's; 90% interval of the gap {g['interval_90'][0]:+.1f} to "
                            f"{g['interval_90'][1]:+.1f} (bootstrap over {g['groups']} groups of the {g['images']} "
                            "test images)")
        else:
            verdicts.append(f"{runtime} at {r:g}×: vitnas alone within the budget")
    return verdicts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=None)
    ap.add_argument("--runtimes", default="torch-eager,onnxruntime")
    ap.add_argument("--budgets", default="0.7,0.5,0.35", help="fractions of the base model's measured latency")
    ap.add_argument("--trials", type=int, default=40,
                    help="per row (the proposals row: its proposals); 0: no rows, the search-efficiency study alone")
    ap.add_argument("--retrain-epochs", type=int, default=None, help="every row alike (default: the config's)")
    ap.add_argument("--hv-trials", type=int, default=60)
    ap.add_argument("--hv-seeds", type=int, default=3)
    ap.add_argument("--hv-val", type=int, default=1000, help="val images the efficiency study evaluates on")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/compare")
    ap.add_argument("--quick", action="store_true",
                    help="the first runtime, the loosest budget, 4 trials per row, each retrain one epoch on a sixteenth "
                         "of the training images, one seed of 4 trials per sampler: runs end to end, proves nothing")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bars say it; a line per trial buries them
    budgets = sorted((float(b) for b in args.budgets.split(",")), reverse=True)
    if args.quick:
        args.trials, args.retrain_epochs, args.hv_trials, args.hv_seeds = 4, 1, 4, 1
        args.runtimes, budgets = args.runtimes.split(",")[0], budgets[:1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {rt: compare_runtime(args, rt, budgets, out) for rt in args.runtimes.split(",")}
    first = next(iter(results.values()))
    hv_start = time.perf_counter()
    eff = efficiency(first["prepared"], first["phase"], budgets[len(budgets) // 2], args.hv_trials, args.hv_seeds,
                     args.hv_val, out) if args.hv_trials else None
    hv_s = time.perf_counter() - hv_start
    total = time.perf_counter() - start
    for r in results.values():
        r.pop("prepared"), r.pop("phase")
    (out / "compare.json").write_text(json.dumps({"runtimes": results, "efficiency": eff, "seconds": total,
                                                  "args": vars(args)}, indent=1, default=str))

    retrain_for = f"{args.retrain_epochs} epoch(s)" if args.retrain_epochs else "the config's epochs"
    print(f"\n{hardware_name(torch.device(args.device))}, torch {torch.__version__}, {datetime.date.today()}; "
          f"{args.trials} trials per row; every row retrained for {retrain_for}; "
          f"whole comparison {total / 60:.1f} min" + (" (--quick: proves nothing)" if args.quick else ""))
    if args.trials:
        verdicts = [v for r in results.values() for v in print_runtime(r, budgets)]
        print("\nTarget, vitnas ≥ 1 point of test top-1 above every other row:")
        for v in verdicts:
            print(f"- {v}")
    if eff:
        print(f"\n### Search efficiency ({first['setting']}; budget {eff['budget']:g}× the base; {args.hv_seeds} "
              f"seeds × {args.hv_trials} trials per sampler, the first {eff['queued_proposals']} the phase's proposals; "
              f"{eff['evaluated_configs']} configs evaluated; {hv_s / 60:.1f} min)\n")
        print("| sampler | final hypervolume (median) | trials to 95% of the best final | trials to random's final "
              "| best val top-1 within the budget (median) |")
        print("|---|---|---|---|---|")
        for s, t in eff["table"].items():
            print(f"| {s} | {t['final_median']:.4f} | {t['reaches_95pct_of_best'] or 'not reached'} | "
                  f"{t['reaches_random_final'] or 'not reached'} | {t['best_within_budget_median']:.1%} |")
        n = eff["table"][DEFAULT_SAMPLER]["reaches_random_final"]
        print(f"\nTarget, {DEFAULT_SAMPLER} (the default) reaches random search's final hypervolume in under half the "
              "trials: "
              + (f"{'met' if n and n < args.hv_trials / 2 else 'missed'} ({n or 'not reached'} of {args.hv_trials})"
                 if eff["best"] > 0 else "cannot tell: no trial of any sampler within the budget"))
    print(f"\nwrote {out}/compare.json" + "".join(f", {out}/{rt}/compare.png" for rt in results if args.trials) +
          (f", {out}/hypervolume.png" if eff else ""))


if __name__ == "__main__":
    main()
