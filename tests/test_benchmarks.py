"""Smoke runs of the benchmark scripts on the tiny workload: they run end to end and write what they report
(their figures come from full runs, in README)."""
import json
import os
import subprocess
import sys

from conftest import ROOT


def run_benchmark(script: str, *args, cache) -> subprocess.CompletedProcess:
    env = {**os.environ, "VITNAS_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_uniform_narrowing_benchmark_runs(cache, tmp_path):
    # a budget of twice the base model: the tiny model's timings are too short (10 calls) for a tight one to
    # be met reliably here, and the smoke is about the script, not the figures
    result = run_benchmark("uniform.py", "--config", "configs/tiny.yaml", "--budgets", "2", "--trials", "4",
                           "--threads", "1", "--quick", "--out", str(tmp_path / "u"), cache=cache)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "u" / "uniform.json").read_text())
    assert report["vitnas_total_seconds"] >= report["phase_seconds"] > 0
    (row,) = report["rows"]
    vitnas, uniform = row["vitnas"], row["uniform"]
    assert vitnas and uniform["epochs"] == 1
    cfg = uniform["config"]  # one width for every block, every head, every block, every token
    assert cfg["depth"] == 4 and cfg["heads"] == [3] * 4 and cfg["keep"] == [1.0] * 4
    assert all(len(set(cfg[k])) == 1 for k in ("qk", "v", "mlp"))
    for m in (vitnas, uniform):
        assert m["ratio"] > 0 and m["params"] > 0 and m["flops"] > 0 and 0 <= m["test_after"] <= 1
    assert "| vitnas − uniform |" in result.stdout
