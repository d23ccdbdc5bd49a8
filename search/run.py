"""The jobs behind the CLI: prepare the workload, run (or load) the gradient phase, search under a budget."""
from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import supernet.gates
import supernet.phase
import supernet.train
from evaluators import Latency, LatencyTable, evaluate_accuracy, measure_latency, resolve_device
from supernet import ConfigError, Supernet
from supernet import distributed as ddp
from supernet.phase import gradient_phase, load_phase, proposals, resolve_methods

from .optimize import Objective, build_sampler, config_params
from .workload import Workload, _hash, cache_dir, load_config, load_workload


@dataclass
class Prepared:
    config: dict
    workload: Workload
    sn: Supernet
    table: LatencyTable
    device: torch.device
    batch_size: int
    threads: int


def prepare(config_path=None, device="auto", batch_size: int = 1, threads: int | None = None, log=print) -> Prepared:
    """The workload (base model trained and cached if need be), its supernet and latency table.

    Under torchrun, rank 0 prepares first (training and caching what is missing); the others then load it.
    """
    dev = resolve_device(device)
    config = load_config(config_path)
    threads = threads or torch.get_num_threads()
    if not ddp.is_main():
        ddp.barrier()
    workload = load_workload(config, device=dev, log=log)
    sn = Supernet.from_timm(workload.model, bounds=config["space"]).eval()
    log(f"latency table: {dev}, batch {batch_size}, {threads} threads, torch-eager (cached after the first run)")
    table = LatencyTable.cached(sn, cache_dir() / "lut", dev, batch_size, threads, progress=ddp.is_main())
    if ddp.is_main():
        ddp.barrier()
    return Prepared(config, workload, sn, table, dev, batch_size, threads)


def phase_dir(p: Prepared, methods: list[str]) -> Path:
    """Where the gradient phase of this config, base model, method set and code version is cached."""
    code = "".join(inspect.getsource(m) for m in (supernet.gates, supernet.phase, supernet.train,
                                                   *(inspect.getmodule(c) for c in supernet.gates.METHODS.values())))
    key = _hash({k: p.config[k] for k in ("space", "supernet")} | {"base": p.workload.checkpoint_hash,
                                                                    "methods": methods}, code)
    return cache_dir() / "supernet" / f"{p.config['name']}-{key}"


def ensure_supernet(p: Prepared, method: str | None = None, epochs: int | None = None, out=None,
                    log=print) -> dict:
    """Load the trained supernet for ``p`` from its folder, or run the gradient phase into it (resumable)."""
    from torch.utils.data import DataLoader

    cfg = p.config["supernet"]
    methods = resolve_methods(method or cfg["method"])
    epochs = cfg["epochs"] if epochs is None else epochs
    if epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {epochs}")
    out = Path(out) if out else phase_dir(p, methods)
    meta = {"config": p.config["name"], "base": p.workload.checkpoint_hash, "methods": methods, "epochs": epochs,
            "supernet": cfg, "space": p.config["space"]}
    done = out / "supernet.pt"
    if done.is_file():
        result = load_phase(p.sn, done, p.device, meta)
        p.table.scorer = p.sn.spec.scorer  # predictions time token drops with the scorer subnets use
        log(f"supernet: cached {done} (token scorer {result['scorer']})")
        return result
    log(f"gradient phase: {', '.join(methods)}, then {epochs} sandwich epochs -> {out}")
    start = time.perf_counter()
    val = p.workload.splits["val"]
    # shuffles with torch's global generator, which the phase seeds per method and epoch (exact resume)
    loader = DataLoader(p.workload.splits["train"], batch_size=cfg["batch_size"], shuffle=True)
    result = gradient_phase(
        p.sn, loader, methods, p.table.unit_costs(p.sn.space), out, meta, epochs, cfg["lr"],
        n_random=cfg["n_random"], seed=cfg["seed"], device=p.device,
        evaluate=lambda c: evaluate_accuracy(p.sn, val, c, p.device), log=log)
    p.table.scorer = p.sn.spec.scorer
    seconds = round(time.perf_counter() - start, 1)
    if ddp.is_main():
        report = phase_report(p, result, seconds)
        (out / "train.json").write_text(json.dumps(report, indent=1))
        log(f"gradient phase: {seconds:.0f} s; largest subnet val top-1 {report['largest_val_top1']:.1%}, "
            f"smallest {report['smallest_val_top1']:.1%}; {len(report['proposals'])} proposals")
        log(f"wrote {out / 'supernet.pt'} and {out / 'train.json'}")
    return result


def phase_report(p: Prepared, result: dict, seconds: float) -> dict:
    """Every proposal's val top-1 on shared weights and predicted latency, with the phase's logs."""
    sn, val, dev = p.sn, p.workload.splits["val"], p.device
    rows = []
    for name, configs in result["proposals"].items():
        for d in configs:
            cfg = type(sn.space.largest()).from_dict(d)
            rows.append({"method": name, "val_top1": evaluate_accuracy(sn, val, cfg, dev),
                         "predicted_ms": round(p.table.predict(cfg), 3), "config": d})
    return {"config": p.config["name"], "checkpoint_hash": p.workload.checkpoint_hash, "seconds": seconds,
            "meta": result["meta"], "scorer": result["scorer"], "scorer_val_top1": result["scorer_val_top1"],
            "largest_val_top1": evaluate_accuracy(sn, val, sn.space.largest(), dev),
            "smallest_val_top1": evaluate_accuracy(sn, val, sn.space.smallest(), dev),
            "method_logs": result["logs"], "sandwich_history": result["sandwich_history"], "proposals": rows}


def _check_budget(p: Prepared, budget_ms: float) -> Latency:
    """Measure the base model, re-anchor the table on it, and refuse a budget no subnet can meet."""
    lat = p.config["latency"]
    base = measure_latency(p.workload.model, p.workload.input_shape, p.device, p.batch_size, p.threads,
                           lat["warmup"], lat["repeats"])
    p.table.anchor(p.sn.space.largest(), base.median_ms)  # absorbs this machine's drift today
    smallest = p.table.predict(p.sn.space.smallest())
    if budget_ms < smallest:
        raise ConfigError(f"budget {budget_ms} ms is below the smallest subnet's predicted latency "
                          f"{smallest:.2f} ms ({p.device}, batch {p.batch_size}, torch-eager); use --budget-ms "
                          f"{smallest * 1.05:.2f} or more")
    return base


def _objective(p: Prepared, budget_ms: float) -> Objective:
    from torch.utils.data import DataLoader

    lat = p.config["latency"]
    return Objective(p.sn, p.table, DataLoader(p.workload.splits["val"], batch_size=256), budget_ms,
                     p.workload.input_shape, p.device, p.batch_size, p.threads, lat["warmup"], lat["repeats"])


def search_command(config_path=None, budget_ms: float = 5.0, device="auto", batch_size: int = 1,
                   threads: int | None = None, trials: int = 100, timeout: float | None = None,
                   sampler: str = "nsga2", seed: int | None = 0, storage: str | None = None,
                   study_name: str | None = None, workers: int = 1, retrain_top: int = 0, out=None,
                   log=print) -> dict:
    """The main job: prepare (cached), then an Optuna study under the budget; writes the results folder."""
    from .study import open_study, run_trials, start_workers, write_results

    if trials < 1 or workers < 1:
        raise ConfigError("--trials and --workers must be at least 1")
    build_sampler(sampler, seed)  # an unknown sampler fails before any work
    p = prepare(config_path, device, batch_size, threads, log)
    base = _check_budget(p, budget_ms)
    result = ensure_supernet(p, log=log)
    out = Path(out) if out else Path("results") / (study_name or p.config["name"])
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or out.resolve().name
    study = open_study(storage, name, sampler, seed)
    settings = {"config_path": str(Path(config_path).resolve()) if config_path else None, "budget_ms": budget_ms,
                "device": str(p.device), "batch_size": batch_size, "threads": p.threads, "sampler": sampler,
                "seed": seed, "base": p.workload.checkpoint_hash}
    if study.user_attrs.get("settings", settings) != settings:
        raise ConfigError(f"study {name!r} in {storage} was run with other settings "
                          f"({study.user_attrs['settings']}); pass another --out or --study")
    study.set_user_attr("settings", settings)
    (out / "run.json").write_text(json.dumps({"settings": settings, "storage": storage, "study": name}, indent=1))
    if not study.trials:  # the gradient phase's proposals go first
        for cfg in proposals(result):
            study.enqueue_trial(config_params(cfg, p.sn.space), skip_if_exists=True)
    log(f"search: {trials} trials, {sampler}, budget {budget_ms} ms ({p.device}, batch {batch_size}, "
        f"{p.threads} threads, torch-eager), study {name!r} in {storage}")
    objective = _objective(p, budget_ms)
    procs = start_workers(workers - 1, storage, name, trials, log) if workers > 1 else []
    try:
        run_trials(study, objective, trials, timeout, show=True)
    finally:
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                log(f"a worker exited with {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}")
    summary = write_results(study, p, base, budget_ms, out, log)
    if retrain_top > 0:
        retrain_front(p, out, budget_ms, retrain_top, log)
    log(f"base model: {base}")
    log((out / "summary.md").read_text())
    log(f"wrote {out}/: trials.csv, pareto.csv, best.yaml, pareto.png, summary.md" +
        (", study.db" if storage.endswith("study.db") else ""))
    return summary


def retrain_front(p: Prepared, out: Path, budget_ms: float, k: int, log=print) -> None:
    """Fine-tune the ``k`` most accurate Pareto configs that re-measured within budget; their test top-1
    after retraining goes into pareto.csv (``retrained_test_top1``)."""
    import pandas as pd

    from .results import config_of
    from .retrain import retrain

    front = pd.read_csv(out / "pareto.csv")
    if "remeasured_ms" not in front:
        return
    chosen = front[front["remeasured_ms"] <= budget_ms].sort_values("val_top1", ascending=False).head(k)
    front["retrained_test_top1"] = float("nan")
    for i, row in chosen.iterrows():
        log(f"retraining trial {int(row['number'])} ({len(chosen)} to retrain)")
        metrics = retrain(p, config_of(row), out / f"retrain-trial{int(row['number'])}", log=log)
        front.loc[i, "retrained_test_top1"] = metrics["test_top1"]
    front.to_csv(out / "pareto.csv", index=False)


def worker_command(storage: str, study_name: str, trials: int | None = None, log=print) -> None:
    """Join a study another `search run` opened (same storage, e.g. PostgreSQL) and run trials for it."""
    import optuna

    from .study import open_study, run_trials

    try:
        settings = optuna.load_study(study_name=study_name, storage=storage).user_attrs["settings"]
    except (KeyError, ValueError) as e:
        raise ConfigError(f"no vitnas study {study_name!r} in {storage} ({e}); start one with "
                          "`python -m search run --storage ... --study ...`") from None
    p = prepare(settings["config_path"], settings["device"], settings["batch_size"], settings["threads"], log)
    _check_budget(p, settings["budget_ms"])
    ensure_supernet(p, log=log)
    study = open_study(storage, study_name, settings["sampler"], None)
    run_trials(study, _objective(p, settings["budget_ms"]), trials or 10**9, None, show=False)


def train_supernet_command(config_path=None, method: str | None = None, epochs: int | None = None,
                           device="auto", out=None, log=print) -> dict:
    """The gradient phase on its own (resumable; under torchrun, data-parallel)."""
    dev = resolve_device(device)
    if dev.type == "cuda" and ddp.world() > 1:
        dev = torch.device("cuda", ddp.rank() % torch.cuda.device_count())
    p = prepare(config_path, dev, log=log)
    return ensure_supernet(p, method, epochs, out, log=log)
