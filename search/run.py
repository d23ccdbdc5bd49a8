"""The search's commands: ``run`` (search under a budget, then ship), ``worker`` and ``train-supernet``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from evaluators import Latency, resolve_device
from evaluators.lut import table_path
from supernet import ConfigError
from supernet import distributed as ddp
from supernet.phase import proposals

from .optimize import DEFAULT_SAMPLER, Objective, build_sampler, check_sampler, config_params, predictions
from .setup import Prepared, ensure_supernet, latency_setting, prepare
from .cache import cache_dir
from .config import load_config


def _check_budget(p: Prepared, budget_ms: float, log=print) -> Latency:
    """Refuse a budget no subnet can meet; returns the base model's latency."""
    smallest = p.table.predict(p.sn.space.smallest())
    if budget_ms < smallest:
        raise ConfigError(f"budget {budget_ms} ms is below the smallest subnet's predicted latency "
                          f"{smallest:.2f} ms ({p.setting.describe()}); use --budget-ms "
                          f"{smallest * 1.05:.2f} or more")
    if budget_ms >= p.base_latency.median_ms:
        log(f"note: the budget {budget_ms} ms is at or above the base model's {p.base_latency}: every subnet "
              "fits, so the search looks for the most accurate one")
    return p.base_latency


def widest_uniform(meter, sn, ratio: float, learn=None) -> tuple[list, int, dict]:
    """Bisect ``sn.space.uniform_shapes()`` (latency grows along the list) by measurement for how many of them
    run within ``ratio`` of the base: ``(shapes, n, measured ratio by index)``; ``shapes[n - 1]`` is the widest
    that fits. ``learn(cfg, ratio)`` is told every measurement."""
    shapes, measured = sn.space.uniform_shapes(), {}
    lo, hi = 0, len(shapes)
    while lo < hi:
        mid = (lo + hi) // 2
        measured[mid] = meter.measure(sn.extract(shapes[mid]).eval()).ratio
        if learn:
            learn(shapes[mid], measured[mid])
        lo, hi = (mid + 1, hi) if measured[mid] <= ratio else (lo, mid)
    return shapes, lo, measured


def uniform_near(p: Prepared, budget_ms: float) -> list:
    """The widest uniformly narrowed shape measured within the budget and the next wider one; none when even the
    narrowest is over. Measured, not predicted, and each measurement teaches the table: before it had seen one,
    the table predicted these full-depth shapes 25-40% slow and skipped them unmeasured (README, issue 13)."""
    shapes, n, _ = widest_uniform(p.meter, p.sn, budget_ms / p.base_latency.median_ms, p.table.add)
    return shapes[max(0, n - 1):n + 1] if n else []


def _objective(p: Prepared, budget_ms: float) -> Objective:
    from torch.utils.data import DataLoader

    return Objective(p.sn, p.table, p.meter, DataLoader(p.workload.splits["val"], batch_size=256), budget_ms,
                     p.workload.input_shape, p.device)


def _sampler(p: Prepared, name: str, seed: int | None):
    """``name``'s sampler, predicting latency with the run's table in the objective's units (ms)."""
    return build_sampler(name, seed, predictions(p.sn.space, p.table.predict))


def search_command(config_path=None, budget_ms: float = 5.0, latency: dict | None = None, trials: int = 100,
                   timeout: float | None = None, sampler: str = DEFAULT_SAMPLER, seed: int | None = 0,
                   storage: str | None = None, study_name: str | None = None, workers: int = 1, retrain_top: int = 1,
                   out=None, log=print, budget_ratio: float | None = None) -> dict:
    """The main job: prepare (cached), then an Optuna study under the budget, then the ``retrain_top`` best
    configs retrained and the best that meets the budget in a fresh process shipped to ``out/best/``.
    ``latency``: the command line's measurement values (device, runtime, dtype, batch_size, threads).
    ``budget_ratio`` instead of ``budget_ms``: the budget is that fraction of the base model's latency as this
    run measures it at its start (the figure every latency is judged at; a continued study keeps its budget)."""
    from .results import load_results
    from .ship import ship
    from .study import hold_folder, open_study, run_trials, start_workers, summary_markdown, write_results

    if trials < 1 or workers < 1 or retrain_top < 0:
        raise ConfigError("--trials and --workers must be at least 1, --retrain-top at least 0")
    if budget_ratio is not None and not (math.isfinite(budget_ratio) and budget_ratio > 0):
        raise ConfigError(f"a budget ratio must be a positive fraction of the base model's latency, got {budget_ratio}")
    if budget_ratio is None and (not math.isfinite(budget_ms) or budget_ms <= 0):
        raise ConfigError(f"--budget-ms must be a positive, finite number of milliseconds, got {budget_ms}")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
    check_sampler(sampler)  # an unknown sampler fails before any work
    config = load_config(config_path)
    setting = latency_setting(config, **(latency or {}))
    out = Path(out) if out else Path("results") / (study_name or config["name"])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder")
    if storage is None and (out / "trials.csv").exists() and not (out / "study.db").exists():
        raise ConfigError(f"{out} holds an earlier search whose study.db is gone, so it cannot be continued; "
                          f"pass another --out, or delete {out} to start over")
    out.mkdir(parents=True, exist_ok=True)
    with hold_folder(out):  # one run per results folder
        storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
        name = study_name or out.resolve().name
        study = open_study(storage, name)
        settings = {"config_path": str(Path(config_path).resolve()) if config_path else None, "budget_ms": budget_ms,
                    "latency": setting.identity(), "sampler": sampler, "seed": seed}
        if budget_ratio is not None:  # the budget in ms is known once the base model is measured (below)
            settings |= {"budget_ms": None, "budget_ratio": budget_ratio}

        def refuse_other(settings: dict, keys) -> None:  # before any work, and again once the base model is known
            old = study.user_attrs.get("settings")
            if old and any(old.get(k) != settings.get(k) for k in keys):
                raise ConfigError(f"study {name!r} in {storage} was run with other settings "
                                  f"({_difference({k: old.get(k) for k in keys}, {k: settings.get(k) for k in keys})}); "
                                  "pass another --out or --study")

        refuse_other(settings, [k for k in settings if k != "budget_ms" or budget_ratio is None])
        p = prepare(config_path, log=log, **(latency or {}))
        if budget_ratio is not None:
            budget_ms = settings["budget_ms"] = ((study.user_attrs.get("settings") or {}).get("budget_ms") or
                                                 round(budget_ratio * p.base_latency.median_ms, 4))
        base = _check_budget(p, budget_ms, log)
        result = ensure_supernet(p, log=log)
        settings["base"] = p.workload.checkpoint_hash
        refuse_other(settings, ["base"])
        study.set_user_attr("settings", settings)
        (out / "run.json").write_text(json.dumps({"settings": settings, "storage": storage, "study": name}, indent=1))
        if not study.trials:  # uniform narrowing around the budget (ship's rival), then the phase's proposals
            for cfg in (uniform_near(p, budget_ms) + proposals(result))[:trials]:  # none left waiting
                study.enqueue_trial(config_params(cfg, p.sn.space), skip_if_exists=True)
        log(f"search: {trials} trials, {sampler}, budget {budget_ms} ms ({p.setting.describe()}), "
            f"study {name!r} in {storage}")
        objective = _objective(p, budget_ms)
        study.sampler = _sampler(p, sampler, seed)
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
    _check_budget(p, settings["budget_ms"], log)
    ensure_supernet(p, log=log)
    study = open_study(storage, study_name)
    study.sampler = _sampler(p, settings["sampler"], None)
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
