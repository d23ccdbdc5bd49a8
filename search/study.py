"""The search job: open (or resume) the study, run trials with a progress bar, write the results."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
import sqlalchemy.event
import sqlalchemy.exc
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from tqdm import tqdm

from evaluators import evaluate_accuracy
from supernet import ConfigError

from .optimize import Objective, process_id
from .results import config_of, pareto_front, plot_front, trials_frame
from .setup import workload_provenance

DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def open_study(storage: str, name: str) -> optuna.Study:
    """The study ``name`` in ``storage``, created when new; its sampler is set once the run is prepared (it
    predicts from the run's latency table)."""
    # Optuna marks heartbeats experimental and warns on every run; vitnas relies on them (tested), so the
    # warning would tell the user nothing they can act on
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if not storage.startswith(("sqlite:///", "postgresql://", "postgresql+", "mysql://", "mysql+")):
        raise ConfigError(f"--storage {storage} is not a database URL vitnas can use; pass sqlite:///PATH.db "
                          "or postgresql://USER@HOST/DB")
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).parent.is_dir():
        raise ConfigError(f"--storage {storage}: the folder {Path(storage[len('sqlite:///'):]).parent} does "
                          "not exist; create it or pass another path")
    url = storage
    for attempt in range(5):
        try:
            # heartbeats let a restarted run fail the trials a killed process left running, and redo them
            storage = optuna.storages.RDBStorage(url, heartbeat_interval=5, grace_period=20)
            break
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError) as e:
            if attempt < 4 and _created_meanwhile(e):
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigError(f"--storage {url}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
        except (ImportError, sqlalchemy.exc.ArgumentError) as e:
            raise ConfigError(f"--storage {url}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if storage.engine.dialect.name == "sqlite":
        sqlalchemy.event.listen(storage.engine, "connect", _write_ahead)
        storage.engine.dispose()  # connections opened from here on get it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize"],
                               load_if_exists=True)


def _created_meanwhile(error: Exception) -> bool:
    """Whether opening a new storage failed because another process was creating its tables at the same moment
    (workers started together on a fresh database; Optuna checks, then creates): a second try finds them."""
    text = str(error).lower()
    return any(s in text for s in ("already exists", "unique constraint", "duplicate key", "database is locked"))


def _write_ahead(connection, _) -> None:
    """SQLite in write-ahead mode, synced at checkpoints: Optuna commits every parameter of every trial (74 per
    trial here); synced, 100 such trials took 26 s of commits on this workplace's CPU, 8 s like this. A crash
    of vitnas loses nothing; a power cut can lose the last trials, never the database."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def hold_folder(out: Path):
    """An exclusive lock on the results folder for this process's lifetime (the open file holds it): two runs
    writing one folder would race on its study and files."""
    import fcntl

    handle = open(out / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{out} is in use by another search run ({owner}); wait for it to finish or pass "
                          "another --out") from None
    handle.truncate(0)
    handle.write(process_id())
    handle.flush()
    return handle


ORPHAN_AFTER_S = 10  # a live process names its trial once its sampler has answered: well under a second here


def fail_orphans(study: optuna.Study) -> int:
    """Mark FAIL the RUNNING trials whose process (on this machine) is gone, e.g. killed with the run, so that
    they are redone and no results file shows them running; and those that name no process after
    ``ORPHAN_AFTER_S`` (killed between Optuna creating the trial and the objective naming its process, before
    any heartbeat). Trials of live workers are left alone; those of other machines are failed by Optuna's
    heartbeat once it lapses."""
    host, n = socket.gethostname(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("process", "")
        gone = (owner.startswith(host + ":") and not _alive(int(owner.rsplit(":", 1)[1])) if owner else
                t.datetime_start is not None and (datetime.now() - t.datetime_start).total_seconds() > ORPHAN_AFTER_S)
        if gone:
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


def run_trials(study: optuna.Study, objective: Objective, n_trials: int, timeout: float | None, show: bool) -> None:
    """Trials until the study (all workers together) has ``n_trials`` completed or skipped ones."""
    with warnings.catch_warnings():  # experimental in Optuna's eyes, relied on here (see open_study)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    fail_orphans(study)
    start = finished(study)
    if start >= n_trials:
        return
    bar = tqdm(total=n_trials, initial=start, desc="search", disable=not show)

    def progress(study, trial):
        bar.n = finished(study)
        feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.user_attrs.get("constraint", 1) <= 0]
        if feasible:
            best = max(feasible, key=lambda t: t.values[0])
            bar.set_postfix(best_val=f"{best.values[0]:.1%}", its_ms=f"{best.values[1]:.2f}")
        bar.refresh()

    try:
        study.optimize(objective, n_trials=n_trials, timeout=timeout, catch=(),
                       callbacks=[MaxTrialsCallback(n_trials, states=DONE), progress])
    finally:
        bar.close()
    fail_orphans(study)  # one killed too early to name its process is old enough to tell by now


def start_workers(n: int, storage: str, study: str, n_trials: int, log) -> list[subprocess.Popen]:
    """``n`` local worker processes on the same storage (each pinned to one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for _ in range(n):
        procs.append(subprocess.Popen([sys.executable, "-m", "search", "worker", "--storage", storage, "--study",
                                       study, "--trials", str(n_trials)], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    log(f"started {n} worker process(es) on {storage}")
    return procs


def write_results(study: optuna.Study, p, base, budget_ms: float, out: Path, log) -> dict:
    """trials.csv, pareto.csv (with test top-1, a re-measurement interleaved with the base model and ``pooled_ms``,
    the mean of the two measurements, held against the budget), best.yaml, pareto.png; returns the summary
    (``summary_markdown`` writes it once the model is shipped)."""
    df = trials_frame([t for t in study.trials if t.state != TrialState.WAITING])  # queued, never run
    df.to_csv(out / "trials.csv", index=False)
    front = pareto_front(df) if "depth" in df else df.iloc[0:0]
    sn, dev = p.sn, p.device
    configs = [sn.space.validate(config_of(r)) for _, r in front.iterrows()]
    if configs:
        again = p.meter.measure_many({f"t{i}": sn.extract(c).eval() for i, c in enumerate(configs)})
        front["remeasured_ms"] = [again[f"t{i}"].at(base.median_ms) for i in range(len(configs))]
        front["remeasured_clock_ms"] = [round(again[f"t{i}"].median_ms, 4) for i in range(len(configs))]
        front["remeasured_ratio"] = [again[f"t{i}"].ratio for i in range(len(configs))]
        # held against the budget. The front is selected on the study's figure, so it reads low there (two runs on
        # 2026-12-02: 10 of 14 and 16 of 18 front configs re-measured higher, median 1.12x and 1.08x); one
        # re-measurement is unbiased but as noisy, and dropped a config at the line about as often as not (trial 39:
        # 3.34 ms in the study, 4.26 re-measured, 3.33 / 3.25 in fresh processes). The mean chooses which configs
        # ship asks about; ship's fresh processes decide.
        front["pooled_ms"] = ((front["measured_ms"] + front["remeasured_ms"]) / 2).round(4)
        front["test_top1"] = [evaluate_accuracy(sn, p.workload.splits["test"], c, dev) for c in configs]
    front.to_csv(out / "pareto.csv", index=False)
    base_val = p.workload.metrics.get("val_top1") or evaluate_accuracy(p.workload.model, p.workload.splits["val"])
    plot_front(df, front, budget_ms, (base.median_ms, base_val), out / "pareto.png", p.setting.describe())
    ok = front[front["pooled_ms"] <= budget_ms] if configs else front
    summary = {"budget_ms": budget_ms, "trials": len(df), "completed": int((df["state"] == "COMPLETE").sum()),
               "skipped": int((df["state"] == "PRUNED").sum()), "pareto": len(front)}
    if len(ok):
        row = ok.sort_values("val_top1", ascending=False).iloc[0]
        best = configs[int(front.index[front["number"] == row["number"]][0])]
        metrics = {k: (float(row[k]) if k in row and row[k] == row[k] else None)
                   for k in ("val_top1", "test_top1", "measured_ms", "remeasured_ms", "pooled_ms",
                             "remeasured_ratio", "predicted_ms", "flops", "params")}
        provenance = {"trial": int(row["number"]), **workload_provenance(p),
                      "config": p.config["name"], **p.setting.identity(), "latency": p.setting.describe(),
                      "budget_ms": budget_ms,
                      "base_latency_ms": round(base.median_ms, 4), "vitnas": _version()}
        best.to_yaml(out / "best.yaml", extra={"metrics": metrics, "provenance": provenance})
        summary["best"] = {"trial": int(row["number"]), **metrics}
    else:
        log(f"no Pareto config within {budget_ms} ms by the mean of its two measurements; best.yaml not written")
    return summary


def summary_markdown(summary: dict, front, p, base) -> str:
    """The shipped model against the base model first (what the user gets), then the search."""
    from .ship import comparison_markdown

    shipped = summary.get("shipped")
    lines = [f"# Search: {p.config['name']}, budget {summary['budget_ms']} ms ({p.setting.describe()})", "",
             comparison_markdown(shipped, p.setting) if shipped else
             "**Nothing shipped**: no retrained config met the budget (see the log)." if "shipped" in summary else
             "Not retrained (`--retrain-top 0`): best.yaml is the winner on shared weights.", "",
             "## Search", "", f"Base model: {base}; val top-1 {p.workload.metrics.get('val_top1', float('nan')):.1%}.",
             f"Trials: {summary['trials']} ({summary['completed']} measured, {summary['skipped']} skipped by the "
             "latency table).", "", "## Pareto front (within the budget by the mean of the study's measurement "
             "and the re-measurement, `pooled_ms`)", ""]
    if "pooled_ms" in front:  # the study's front holds configs whose in-study figure fitted and the mean did not
        over = int((front["pooled_ms"] > summary["budget_ms"]).sum())
        front = front[front["pooled_ms"] <= summary["budget_ms"]]
        if over:
            lines += [f"{over} more config(s) of the study's front are over the budget by that mean and are left "
                      "out (pareto.csv lists them).", ""]
    cols = [c for c in ("number", "val_top1", "test_top1", "measured_ms", "remeasured_ms", "pooled_ms",
                        "remeasured_ratio", "predicted_ms", "retrained_val_top1", "retrained_test_top1", "fresh_ms", "embed_dim",
                        "depth") if c in front]
    if len(front):
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for _, r in front.iterrows():
            lines.append("| " + " | ".join(("" if r[c] != r[c] else f"{r[c]:.4g}") if isinstance(r[c], float)
                                           else str(r[c]) for c in cols) + " |")  # NaN: not retrained
    if "best" in summary:
        b = summary["best"]
        lines += ["", f"Best within budget on shared weights: trial {b['trial']}, val {b['val_top1']:.1%}, test "
                      f"{b['test_top1']:.1%}, {b['measured_ms']:.2f} ms in the study and {b['remeasured_ms']:.2f} ms re-measured "
                      f"(mean {b['pooled_ms']:.2f} ms) in {p.setting.runtime}, {p.setting.dtype} (best.yaml)."]
    return "\n".join(lines) + "\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("vitnas")
    except PackageNotFoundError:  # running from a checkout that is not installed: read the checkout's version
        text = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
        return next((line.split("=", 1)[1].strip().strip('"') for line in text.splitlines()
                     if line.startswith("version")), "unknown")
