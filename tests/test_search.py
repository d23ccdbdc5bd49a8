"""The outer loop: suggestion covers every axis, repair keeps configs valid, the study writes its files."""
import json

import numpy as np
import optuna
import pandas as pd
import pytest

from conftest import micro_vit
from search.optimize import config_params, repair, suggest_config
from search.results import config_of, pareto_front, trials_frame
from supernet import Supernet, SubnetConfig


def test_suggestion_names_every_block_and_repairs_to_valid_configs():
    sn = Supernet.from_timm(micro_vit())
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(0))
    for _ in range(40):
        trial = study.ask()
        cfg = suggest_config(trial, sn.space)
        sn.space.validate(cfg)  # repaired: keep non-increasing, conv only before the first drop
        names = set(trial.params)
        assert {f"{k}_{i}" for k in ("heads", "mlp", "ops", "keep") for i in range(4)} <= names
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
