"""The jobs behind the CLI: prepare the workload, run (or load) the gradient phase, search under a budget."""
from __future__ import annotations

import copy
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import supernet.gates
import supernet.phase
import supernet.train
from evaluators import Latency, LatencyMeter, LatencySetting, LatencyTable, evaluate_accuracy, resolve_device
from evaluators.lut import table_path
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
    setting: LatencySetting      # the one measurement setting of this command: every latency is taken in it
    meter: LatencyMeter          # times subnets interleaved with the base model (prepared once)
    table: LatencyTable
    base_latency: Latency        # the base model measured at the start of this command; the table is anchored on it

    @property
    def device(self) -> torch.device:
        return self.setting.torch_device


def latency_setting(config: dict, device="auto", runtime=None, dtype=None, batch_size=None, threads=None
                    ) -> LatencySetting:
    """The config's ``latency:`` section with the command line's values over it (None: not given)."""
    given = {"runtime": runtime, "dtype": dtype, "batch_size": batch_size, "threads": threads}
    return LatencySetting.resolve(device, **(config["latency"] | {k: v for k, v in given.items() if v is not None}))


def prepare(config_path=None, device="auto", runtime=None, dtype=None, batch_size=None, threads=None,
            log=print) -> Prepared:
    """The workload (base model trained and cached if need be), its supernet, the measurement setting and the
    latency table calibrated for it. Every value is checked before any work starts.

    Under torchrun, rank 0 prepares first (training and caching what is missing); the others then load it.
    """
    config = load_config(config_path)
    setting = latency_setting(config, device, runtime, dtype, batch_size, threads)
    if not ddp.is_main():
        ddp.barrier()
    workload = load_workload(config, device=setting.torch_device, log=log)
    # the supernet trains and reorders a copy: workload.model stays the base model (the teacher, the reference)
    sn = Supernet.from_timm(copy.deepcopy(workload.model), bounds=config["space"]).eval()
    meter = LatencyMeter(setting, workload.input_shape, reference=workload.model)
    log(f"latency: {setting.describe()} (table calibrated on first use, then cached)")
    table = LatencyTable.cached(sn, setting, cache_dir() / "lut", meter=meter, progress=ddp.is_main())
    base = meter.measure_reference()
    table.anchor(base.median_ms)  # predictions are ratios to the base model as it runs today
    if ddp.is_main():
        ddp.barrier()
    return Prepared(config, workload, sn, setting, meter, table, base)


def phase_dir(p: Prepared, methods: list[str]) -> Path:
    """Where the gradient phase of this config, base model, method set and code version is cached."""
    code = "".join(inspect.getsource(m) for m in (supernet.gates, supernet.phase, supernet.train,
                                                   *(inspect.getmodule(c) for c in supernet.gates.METHODS.values())))
    # NViT's and SPViT's latency terms come from the table, so the phase belongs to a measurement setting too
    key = _hash({k: p.config[k] for k in ("space", "supernet")} | {"base": p.workload.checkpoint_hash,
                                                                    "methods": methods,
                                                                    "latency": p.setting.identity()}, code)
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
            "supernet": cfg, "space": p.config["space"], "latency": p.setting.identity()}
    done = out / "supernet.pt"
    if done.is_file():
        result = load_phase(p.sn, done, p.device, meta)
        log(f"supernet: cached {done} (token scorer {result['scorer']})")
        use_scorer_table(p, log)
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
    use_scorer_table(p, log)
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


def use_scorer_table(p: Prepared, log=print) -> None:
    """After the phase chose a token scorer: the table calibrated for subnets that drop tokens with it."""
    if p.table.key["model"]["scorer"] != p.sn.spec.scorer:
        log(f"latency: token scorer {p.sn.spec.scorer} (table calibrated on first use, then cached)")
        anchor = p.table.base_ms
        p.table = LatencyTable.cached(p.sn, p.setting, cache_dir() / "lut", meter=p.meter, progress=ddp.is_main())
        p.table.anchor(anchor)


def _check_budget(p: Prepared, budget_ms: float) -> Latency:
    """Refuse a budget no subnet can meet; returns the base model's latency."""
    smallest = p.table.predict(p.sn.space.smallest())
    if budget_ms < smallest:
        raise ConfigError(f"budget {budget_ms} ms is below the smallest subnet's predicted latency "
                          f"{smallest:.2f} ms ({p.setting.describe()}); use --budget-ms "
                          f"{smallest * 1.05:.2f} or more")
    return p.base_latency


def _objective(p: Prepared, budget_ms: float) -> Objective:
    from torch.utils.data import DataLoader

    return Objective(p.sn, p.table, p.meter, DataLoader(p.workload.splits["val"], batch_size=256), budget_ms,
                     p.workload.input_shape, p.device)


def search_command(config_path=None, budget_ms: float = 5.0, latency: dict | None = None, trials: int = 100,
                   timeout: float | None = None, sampler: str = "nsga2", seed: int | None = 0,
                   storage: str | None = None, study_name: str | None = None, workers: int = 1, retrain_top: int = 1,
                   out=None, log=print) -> dict:
    """The main job: prepare (cached), then an Optuna study under the budget, then the ``retrain_top`` best
    configs retrained and the best that meets the budget in a fresh process shipped to ``out/best/``.
    ``latency``: the command line's measurement values (device, runtime, dtype, batch_size, threads)."""
    from .results import load_results
    from .ship import ship
    from .study import open_study, run_trials, start_workers, summary_markdown, write_results

    if trials < 1 or workers < 1 or retrain_top < 0:
        raise ConfigError("--trials and --workers must be at least 1, --retrain-top at least 0")
    build_sampler(sampler, seed)  # an unknown sampler fails before any work
    config = load_config(config_path)
    setting = latency_setting(config, **(latency or {}))
    out = Path(out) if out else Path("results") / (study_name or config["name"])
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study_name or out.resolve().name
    study = open_study(storage, name, sampler, seed)
    settings = {"config_path": str(Path(config_path).resolve()) if config_path else None, "budget_ms": budget_ms,
                "latency": setting.identity(), "sampler": sampler, "seed": seed}

    def refuse_other(settings: dict, keys) -> None:  # before any work, and again once the base model is known
        old = study.user_attrs.get("settings")
        if old and any(old.get(k) != settings.get(k) for k in keys):
            raise ConfigError(f"study {name!r} in {storage} was run with other settings "
                              f"({_difference({k: old.get(k) for k in keys}, {k: settings.get(k) for k in keys})}); "
                              "pass another --out or --study")

    refuse_other(settings, list(settings))
    p = prepare(config_path, log=log, **(latency or {}))
    base = _check_budget(p, budget_ms)
    result = ensure_supernet(p, log=log)
    settings["base"] = p.workload.checkpoint_hash
    refuse_other(settings, ["base"])
    study.set_user_attr("settings", settings)
    (out / "run.json").write_text(json.dumps({"settings": settings, "storage": storage, "study": name}, indent=1))
    if not study.trials:  # the gradient phase's proposals go first
        for cfg in proposals(result):
            study.enqueue_trial(config_params(cfg, p.sn.space), skip_if_exists=True)
    log(f"search: {trials} trials, {sampler}, budget {budget_ms} ms ({p.setting.describe()}), "
        f"study {name!r} in {storage}")
    objective = _objective(p, budget_ms)
    procs = start_workers(workers - 1, storage, name, trials, log) if workers > 1 else []
    try:
        run_trials(study, objective, trials, timeout, show=True)
    finally:
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                log(f"a worker exited with {proc.returncode}: {err.strip().splitlines()[-1] if err.strip() else ''}")
        p.table.save(table_path(p.sn, p.setting, cache_dir() / "lut"))  # what this study measured, for the next
    summary = write_results(study, p, base, budget_ms, out, log)
    if retrain_top:
        summary["shipped"] = ship(p, out, budget_ms, retrain_top, log)
    else:
        log("not retrained (--retrain-top 0): best.yaml is the winner on shared weights")
    (out / "summary.md").write_text(summary_markdown(summary, load_results(out).pareto, p, base))
    log(f"wrote {out}/: trials.csv, pareto.csv, best.yaml, pareto.png, summary.md" +
        (", study.db" if storage.endswith("study.db") else "") + (", best/" if summary.get("shipped") else ""))
    log((out / "summary.md").read_text())
    return summary


def _difference(old: dict, new: dict) -> str:
    """The settings that differ, as 'key: old -> new' (nested dicts flattened)."""
    flat = lambda d, pre="": {f"{pre}{k}": v for k0, v0 in d.items()  # noqa: E731
                              for k, v in (flat(v0, f"{k0}.").items() if isinstance(v0, dict) else [(k0, v0)])}
    a, b = flat(old), flat(new)
    return ", ".join(f"{k}: {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))


def worker_command(storage: str, study_name: str, trials: int | None = None, latency: dict | None = None,
                   log=print) -> None:
    """Join a study another `search run` opened (same storage, e.g. PostgreSQL) and run trials for it. Its
    measurement setting is the study's; ``latency`` values given on the command line must agree with it."""
    import optuna

    from .study import open_study, run_trials

    try:
        settings = optuna.load_study(study_name=study_name, storage=storage).user_attrs["settings"]
    except (KeyError, ValueError) as e:
        raise ConfigError(f"no vitnas study {study_name!r} in {storage} ({e}); start one with "
                          "`python -m search run --storage ... --study ...`") from None
    study_latency = settings["latency"]
    clash = {k: v for k, v in (latency or {}).items() if v is not None and k != "device" and study_latency[k] != v}
    if clash:
        raise ConfigError(f"study {study_name!r} measures in {study_latency}, not {clash}; a study is continued in "
                          "the setting it was started in (start another study for another runtime)")
    device = (latency or {}).get("device")  # another machine may name its own GPU
    p = prepare(settings["config_path"], log=log, **(study_latency | ({"device": device} if device else {})))
    _check_budget(p, settings["budget_ms"])
    ensure_supernet(p, log=log)
    study = open_study(storage, study_name, settings["sampler"], None)
    run_trials(study, _objective(p, settings["budget_ms"]), trials or 10**9, None, show=False)


def train_supernet_command(config_path=None, method: str | None = None, epochs: int | None = None,
                           latency: dict | None = None, out=None, log=print) -> dict:
    """The gradient phase on its own (resumable; under torchrun, data-parallel)."""
    latency = dict(latency or {})
    dev = resolve_device(latency.pop("device", "auto"))
    if dev.type == "cuda" and ddp.world() > 1:
        dev = torch.device("cuda", ddp.rank() % torch.cuda.device_count())
    p = prepare(config_path, dev, log=log, **latency)
    return ensure_supernet(p, method, epochs, out, log=log)
