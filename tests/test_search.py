"""The outer loop: suggestion covers every axis, repair keeps configs valid, the study writes its files."""
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import torch

from conftest import micro_vit
from evaluators import LatencySetting
from search.optimize import config_params, repair, suggest_config
from search.results import pareto_front
from search.study import summary_markdown
from supernet import Supernet, SubnetConfig


def test_suggestion_names_every_block_and_repairs_to_valid_configs():
    sn = Supernet.from_timm(micro_vit())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    for _ in range(40):
        trial = study.ask()
        cfg = suggest_config(trial, sn.space)
        sn.space.validate(cfg)  # repaired: keep non-increasing, conv only before the first drop
        names = set(trial.params)
        assert {f"{k}_{i}" for k in ("heads", "qk", "v", "mlp", "ops", "keep") for i in range(4)} <= names
        study.tell(trial, [0.5, 1.0])


def test_config_params_round_trip_through_a_trial():
    sn = Supernet.from_timm(micro_vit())
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(10):
        cfg = sn.space.sample(rng)
        study.enqueue_trial(config_params(cfg, sn.space))
        trial = study.ask()
        assert suggest_config(trial, sn.space) == cfg
        study.tell(trial, [0.0, 0.0])
    # a version-1 config (no head widths) is suggested as the base head width
    old = SubnetConfig(48, 2, [3, 2], [192, 96], ["msa", "msa"], [1.0, 0.5])
    study.enqueue_trial(config_params(old, sn.space))
    assert suggest_config(study.ask(), sn.space) == SubnetConfig(48, 2, [3, 2], [192, 96], ["msa", "msa"], [1.0, 0.5],
                                                                 [16, 16], [16, 16])


def test_repair():
    cfg = SubnetConfig(48, 3, [3, 3, 3], [192] * 3, ["msa", "conv", "conv"], [1.0, 0.5, 0.75])
    fixed = repair(cfg)
    assert fixed.keep == [1.0, 0.5, 0.5] and fixed.ops == ["msa", "msa", "msa"]


def test_pareto_front_keeps_feasible_non_dominated_trials():
    df = pd.DataFrame({"number": range(5), "state": ["COMPLETE"] * 4 + ["PRUNED"],
                       "val_top1": [0.9, 0.8, 0.95, 0.99, 1.0], "measured_ms": [2.0, 3.0, 2.5, 9.0, 1.0],
                       "feasible": [True, True, True, False, False]})
    front = pareto_front(df)
    assert front["number"].tolist() == [0, 2]  # 1 is dominated, 3 infeasible, 4 skipped


def test_the_summary_lists_only_front_configs_that_met_the_budget_when_re_measured():
    front = pd.DataFrame({"number": [4, 7, 9], "val_top1": [0.8, 0.85, 0.9], "measured_ms": [3.0, 4.0, 4.9],
                          "remeasured_ms": [3.1, 5.3, 4.8]})
    p = SimpleNamespace(config={"name": "x"}, setting=LatencySetting(), workload=SimpleNamespace(metrics={}))
    summary = {"budget_ms": 5.0, "trials": 12, "completed": 10, "skipped": 2, "pareto": 3}
    text = summary_markdown(summary, front, p, "10 ms")
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "number" not in line]
    assert rows == ["4", "9"] and "1 more config(s) of the study's front re-measured over the budget" in text


def test_a_trial_whose_process_is_gone_is_failed_and_a_live_ones_is_left_running(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from search.study import fail_orphans

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", directions=["maximize", "minimize"])
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = study.ask(), study.ask()
    dead.set_user_attr("process", f"{socket.gethostname()}:{int(gone.stdout)}")
    live.set_user_attr("process", f"{socket.gethostname()}:{os.getpid()}")
    assert fail_orphans(study) == 1
    states = {t.number: t.state.name for t in study.trials}
    assert states == {dead.number: "FAIL", live.number: "RUNNING"}


def test_a_trial_is_judged_on_its_ratio_to_the_base_model_not_on_a_drifting_clock():
    from conftest import synthetic_table
    from evaluators import Latency
    from search.optimize import Objective

    class SlowMachine:  # every model reads 3× slower than at the run's start; the ratio is unmoved
        def measure(self, model):
            return Latency(median_ms=30.0, p10_ms=29.0, p90_ms=31.0, repeats=10, runtime="torch-eager",
                           device="cpu", batch_size=1, threads=1, dtype="float32", ratio=0.4)

    sn = Supernet.from_timm(micro_vit()).eval()
    table = synthetic_table(sn)
    table.anchor(20.0)  # the base model measured 20 ms at the start of the command
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))))
    objective = Objective(sn, table, SlowMachine(), val, budget_ms=10.0, input_shape=(1, 32, 32), device="cpu")
    attrs = objective._evaluate(sn.space.smallest())
    assert attrs["measured_ms"] == 8.0 and attrs["clock_ms"] == 30.0 and attrs["constraint"] == -2.0
