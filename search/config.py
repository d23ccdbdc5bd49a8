"""A workload config: a YAML file merged over the defaults (the bundled ``configs/default.yaml``'s), every
value checked by ``schema`` when it is loaded."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from evaluators import LatencySetting
from supernet import ConfigError

from .schema import check_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULTS: dict = {
    "name": "default",
    "model": {"name": "vitnas_tiny", "arch": None, "pretrained": False, "checkpoint": None, "kwargs": {}},
    "data": {"name": "digits", "root": None, "seed": 0, "digit_min": 20, "digit_max": 24, "clutter": 1,
             "jitter": 4, "variants": [8, 3, 3], "mean": None, "std": None, "batch_size": 256},
    "train": {"epochs": 12, "batch_size": 64, "lr": 1.5e-3, "weight_decay": 0.05, "warmup": 0.05,
              "label_smoothing": 0.1, "patch_drop": 0.5, "full_patch_epochs": 1, "init_values": 1e-4, "seed": 0},
    "space": {},
    "latency": {"runtime": "auto", "dtype": "float32", "batch_size": 1, "threads": None,
                "warmup": LatencySetting.warmup, "repeats": LatencySetting.repeats, "block": LatencySetting.block},
    "supernet": {"method": "all", "epochs": 2, "lr": 5e-4, "batch_size": 64, "n_random": 2, "seed": 0},
    "retrain": {"epochs": 3, "lr": 5e-4, "batch_size": 64, "kd_weight": 0.5, "temperature": 2.0, "seed": 0},
}


def _merge(defaults: dict, given: dict, where: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        section = f" under {where.rstrip('.')}" if where else ""
        raise ConfigError(f"unknown config key {where}{unknown[0]!r}; valid keys{section} are {sorted(defaults)}")
    out = copy.deepcopy(defaults)
    for k, v in given.items():
        if isinstance(defaults[k], dict) and defaults[k] and k != "kwargs":
            if not isinstance(v, dict):
                raise ConfigError(f"config key {where}{k} must be a mapping")
            out[k] = _merge(defaults[k], v, f"{where}{k}.")
        else:
            out[k] = v
    return out


def load_config(path: str | Path | None = None) -> dict:
    """A workload config (YAML) merged over the defaults; ``None`` is the bundled ``configs/default.yaml``."""
    path = Path(path) if path is not None else CONFIG_DIR / "default.yaml"
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass --config with a YAML file "
                          f"(examples in {CONFIG_DIR})")
    try:
        given = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (YAML) file; pass --config with a YAML file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"malformed YAML in {path}" + (f", line {mark.line + 1}" if mark else "") +
                          f": {getattr(e, 'problem', e)}") from None
    if given is None:
        raise ConfigError(f"{path} is empty; leave out --config for the bundled workload, or start from "
                          f"{CONFIG_DIR / 'default.yaml'}")
    if not isinstance(given, dict):
        raise ConfigError(f"{path} must hold a mapping of sections {sorted(DEFAULTS)}")
    config = _merge(DEFAULTS, given, "")
    check_config(config, path)
    return config
