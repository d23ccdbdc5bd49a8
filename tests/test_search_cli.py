"""`python -m search run` end to end on the tiny workload: files, results API, show, export, workers on a
shared SQLite and PostgreSQL storage, and resuming after SIGKILL."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import ROOT
from search import load_results
from supernet import ConfigError
from test_cli import error_line, run_cli

RUN = ("run", "--config", "configs/tiny.yaml", "--device", "cpu", "--threads", "1", "--retrain-top", "0")


def _finished(storage, study):
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def test_run_writes_every_output_and_they_read_back(cache, tmp_path):
    out = tmp_path / "res"
    result = run_cli(*RUN, "--budget-ms", "50", "--trials", "12", "--out", str(out), cache=cache)
    assert result.returncode == 0, result.stderr
    for name in ("study.db", "trials.csv", "pareto.csv", "best.yaml", "pareto.png", "summary.md", "run.json"):
        assert (out / name).is_file(), name
    r = load_results(out)
    assert len(r.trials) == 12 and {"heads_3", "keep_3", "mlp_0", "val_top1", "measured_ms"} <= set(r.trials)
    assert "Trials: 12 (" in (out / "summary.md").read_text()  # the count asked for, none left waiting
    assert len(r.pareto) >= 1 and {"test_top1", "remeasured_ms", "pooled_ms", "ratio_to_base"} <= set(r.pareto)
    # what is held against the budget: the mean of the study's measurement and the re-measurement
    assert ((r.pareto["measured_ms"] + r.pareto["remeasured_ms"]) / 2 - r.pareto["pooled_ms"]).abs().max() < 1e-4
    assert r.pareto["measured_ms"].is_monotonic_increasing and r.pareto["val_top1"].is_monotonic_increasing
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["provenance"]["budget_ms"] == 50 and best["provenance"]["base_checkpoint_hash"]
    assert best["metrics"]["pooled_ms"] <= 50
    study = optuna.load_study(study_name="res", storage=f"sqlite:///{out / 'study.db'}")
    first = study.trials[0]  # the gradient phase's proposals were enqueued first
    assert first.system_attrs.get("fixed_params") and "config" in first.user_attrs

    shown = run_cli("show", str(out), cache=cache)
    assert shown.returncode == 0 and "Pareto front" in shown.stdout
    trial = int(r.pareto["number"].iloc[0])
    exported = run_cli("export", str(out), "--trial", str(trial), "--to", str(tmp_path / "x"), cache=cache)
    assert exported.returncode == 0, exported.stderr
    for name in ("subnet.yaml", "model.safetensors", "model.onnx"):
        assert (tmp_path / "x" / name).is_file()
    assert "no search results" in error_line(run_cli("show", str(tmp_path), cache=cache))
    assert "trial 99999 has no config" in error_line(run_cli("export", str(out), "--trial", "99999", "--to",
                                                             str(tmp_path / "y"), cache=cache))
    assert "was run with other settings" in error_line(run_cli(*RUN, "--budget-ms", "60", "--trials", "12",
                                                               "--out", str(out), cache=cache))
    assert "unknown sampler" in error_line(run_cli(*RUN, "--budget-ms", "50", "--sampler", "grid", "--out",
                                                   str(tmp_path / "z"), cache=cache))


def _run_with_workers(cache, tmp_path, storage, study, trials=6):
    result = run_cli(*RUN, "--budget-ms", "50", "--trials", str(trials), "--workers", "2", "--storage", storage,
                     "--study", study, "--out", str(tmp_path / study), cache=cache)
    assert result.returncode == 0, result.stderr
    done = _finished(storage, study)
    numbers = [t.number for t in done]
    assert trials <= len(done) <= trials + 1  # at most the one trial a worker had started
    assert len(set(numbers)) == len(numbers)
    assert all(("val_top1" in t.user_attrs) or t.state.name == "PRUNED" for t in done)  # nothing half-written
    assert len(load_results(tmp_path / study).trials) == len(optuna.load_study(
        study_name=study, storage=storage).trials)


def test_two_workers_share_one_sqlite_study(cache, tmp_path):
    _run_with_workers(cache, tmp_path, f"sqlite:///{tmp_path / 'shared.db'}", "shared")


def _pg_bin():
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs else None


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server in a temporary folder (.ci/run installs it from Debian's packages)."""
    bindir = _pg_bin()
    assert bindir is not None, "PostgreSQL is not installed; .ci/run installs it (apt-get install postgresql)"
    data = Path(tempfile.mkdtemp(prefix="vitnas-pg-", dir="/tmp"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # postgres refuses to run as root
    if as_pg:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(as_pg + [str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres"],
                   check=True, capture_output=True)
    subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                            f"-p {port} -h 127.0.0.1 -k {data}", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_pg + [str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(cache, tmp_path, postgres_url):
    _run_with_workers(cache, tmp_path, postgres_url, "pg")


def test_a_run_killed_mid_study_resumes_and_keeps_its_trials(cache, tmp_path):
    out = tmp_path / "killed"
    storage = f"sqlite:///{out / 'study.db'}"
    env = {**os.environ, "VITNAS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "search", *RUN, "--budget-ms", "50", "--trials", "30", "--out", str(out)]
    log = tmp_path / "killed.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    before = []
    while time.time() < deadline and proc.poll() is None:
        time.sleep(1)
        # run.json is written once the study and its tables exist: opening the storage earlier would create them
        # from this process too, and the run could lose that race and exit
        if (out / "run.json").exists():
            before = [t for t in _finished(storage, "killed") if t.state.name == "COMPLETE"]
            if len(before) >= 3:
                break
    assert proc.poll() is None and len(before) >= 3, f"the run ended or stalled before the kill:\n{log.read_text()}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {t.number: t.values for t in _finished(storage, "killed")}
    again = run_cli(*RUN, "--budget-ms", "50", "--trials", "30", "--out", str(out), cache=cache)
    assert again.returncode == 0, again.stderr
    after = {t.number: t.values for t in _finished(storage, "killed")}
    assert all(after[n] == v for n, v in kept.items())  # every trial completed before the kill is kept
    assert len(after) >= 30
    states = load_results(out).trials["state"]
    assert len(states) >= 30 and "RUNNING" not in set(states)  # the trial the kill interrupted is failed, and redone


def test_a_results_folder_in_use_is_refused(cache, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from search.study import hold_folder; h = hold_folder(Path(sys.argv[1])); "
                               "print('held', flush=True); time.sleep(60)", str(out)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        line = error_line(run_cli(*RUN, "--budget-ms", "50", "--trials", "4", "--out", str(out), cache=cache))
        assert f"{out} is in use by another search run" in line and f":{holder.pid})" in line
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "study.db").exists()  # refused before it touched the folder


def test_a_budget_given_as_a_ratio_is_set_from_the_base_latency_the_run_judges_at(cache, tmp_path, monkeypatch):
    """Benchmarks budget a fraction of the base model: set from the run's own base measurement (a separate one
    before the run can differ by 2× on a noisy machine), and kept when the study is continued."""
    from search.run import search_command

    monkeypatch.setenv("VITNAS_CACHE", str(cache))
    out = tmp_path / "ratio"
    latency = {"device": "cpu", "threads": 1}
    # above 1: the tiny model's smallest subnet runs near its base's latency (per-block dispatch), and the continued run
    # below holds the kept budget against its own base measurement, which a loaded machine makes slower (0.9 failed)
    search_command("configs/tiny.yaml", None, latency, trials=1, retrain_top=0, out=out, log=lambda *a: None,
                   budget_ratio=1.5)
    settings = yaml.safe_load((out / "run.json").read_text())["settings"]
    measured = load_results(out).trials.dropna(subset=["measured_ms"]).iloc[0]
    base_ms = measured["measured_ms"] / measured["ratio_to_base"]  # the base latency the run judged trials at
    assert settings["budget_ratio"] == 1.5 and settings["budget_ms"] == pytest.approx(1.5 * base_ms, rel=1e-3)
    search_command("configs/tiny.yaml", None, latency, trials=2, retrain_top=0, out=out, log=lambda *a: None,
                   budget_ratio=1.5)
    assert yaml.safe_load((out / "run.json").read_text())["settings"]["budget_ms"] == settings["budget_ms"]
    assert len(load_results(out).trials) == 2
    with pytest.raises(ConfigError, match="a budget ratio must be a positive fraction"):
        search_command("configs/tiny.yaml", None, latency, out=tmp_path / "bad", budget_ratio=0.0)
