"""Every config value's type and range, checked in one place when a config is loaded, so that a mistake in
``retrain:`` is reported before a 12-minute base training, not after it.

A rule is a function of the value that returns what is wrong with it, or None.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from supernet import ConfigError
from supernet.config import OPS

Rule = Callable[[object], "str | None"]


def whole(lo: int, hi: int | None = None) -> Rule:
    def rule(v):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            return f"a whole number {f'in [{lo}, {hi}]' if hi is not None else f'>= {lo}'}"
    return rule


def number(lo: float, hi: float = math.inf, above: bool = False, below: bool = False) -> Rule:
    """A finite number in [lo, hi]; ``above``/``below`` exclude the bound itself."""
    def rule(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or v < lo or v > hi or (above and v == lo) or (below and v == hi):
            left, right = "(" if above else "[", ")" if below or hi == math.inf else "]"
            return f"a number in {left}{lo}, {hi}{right}"
    return rule


def text(*choices: str) -> Rule:
    def rule(v):
        if not isinstance(v, str) or (choices and v not in choices):
            return f"one of {list(choices)}" if choices else "a string"
    return rule


def flag(v):
    return None if isinstance(v, bool) else "true or false"


def mapping(v):
    return None if isinstance(v, dict) else "a mapping"


def optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else rule(v)


def list_of(rule: Rule, length: int | None = None) -> Rule:
    def check(v):
        if not isinstance(v, list) or (length is not None and len(v) != length) or any(rule(x) for x in v):
            what = rule(v[0] if isinstance(v, list) and v else None) or "values"
            return f"a list of {length or 'one or more'} ({what})"
    return check


def methods(v):
    return None if isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v)) \
        else "'all', a method name, or a list of them"


positive = number(0, above=True)
fraction = number(0, 1)
SCHEMA: dict = {
    "name": text(),
    "model": {"name": text(), "arch": optional(text()), "pretrained": flag, "checkpoint": optional(text()),
              "kwargs": mapping},
    "data": {"name": text("digits", "imagefolder"), "root": optional(text()), "seed": whole(0),
             "digit_min": whole(1), "digit_max": whole(1), "clutter": whole(0), "jitter": whole(0),
             "variants": list_of(whole(1), 3), "mean": optional(list_of(number(-math.inf))),
             "std": optional(list_of(positive)), "batch_size": whole(1)},
    "train": {"epochs": whole(1), "batch_size": whole(1), "lr": positive, "weight_decay": number(0),
              "warmup": fraction, "label_smoothing": number(0, 1, below=True),
              "patch_drop": number(0, 1, below=True), "full_patch_epochs": whole(0),
              "init_values": optional(positive), "seed": whole(0)},
    "latency": {"runtime": text(), "dtype": text(), "batch_size": whole(1), "threads": optional(whole(1)),
                "warmup": whole(0), "repeats": whole(1), "block": whole(1)},
    "supernet": {"method": methods, "epochs": whole(0), "lr": positive, "batch_size": whole(1),
                 "n_random": whole(0), "seed": whole(0)},
    "retrain": {"epochs": whole(1), "lr": positive, "batch_size": whole(1), "kd_weight": fraction,
                "temperature": positive, "seed": whole(0)},
}
# space: per axis, the bounds it takes; an axis's max is the base model's (the largest subnet is the base)
SPACE = {"embed_dim": {"min": whole(1), "step": whole(1)}, "depth": {"min": whole(1), "step": whole(1)},
         "heads": {"min": whole(1), "step": whole(1)}, "mlp": {"min": whole(1), "step": whole(1)},
         "qk": {"min": whole(1), "step": whole(1)}, "v": {"min": whole(1), "step": whole(1)},
         "keep": {"min": number(0, 1, above=True), "step": number(0, 1, above=True)}}


def check_config(config: dict, path) -> None:
    """Raise ConfigError naming the first value of ``config`` (merged over the defaults) that breaks a rule."""
    for section, rules in SCHEMA.items():
        if callable(rules):
            _check(rules, config[section], section, path)
            continue
        for key, rule in rules.items():
            _check(rule, config[section][key], f"{section}.{key}", path)
    space = config["space"]
    if not isinstance(space, dict):
        raise ConfigError(f"{path}: space must be a mapping of axes {sorted(SPACE) + ['ops']}, got {space!r}")
    for axis, bounds in space.items():
        if axis == "ops":
            if not isinstance(bounds, list) or not bounds or any(op not in OPS for op in bounds) or "msa" not in bounds:
                raise ConfigError(f"{path}: space.ops must list the block types to search, from {list(OPS)} and "
                                  f"including 'msa' (the largest subnet is the base model), got {bounds!r}")
            continue
        if axis not in SPACE:
            raise ConfigError(f"{path}: unknown search-space axis {axis!r}; valid axes are {sorted(SPACE) + ['ops']}")
        if not isinstance(bounds, dict):
            raise ConfigError(f"{path}: space.{axis} must be a mapping of bounds {sorted(SPACE[axis])}")
        for key, value in bounds.items():
            if key not in SPACE[axis]:
                why = " (the maximum is the base model's: the largest subnet is the base)" if key == "max" else ""
                raise ConfigError(f"{path}: space.{axis} has no bound {key!r}{why}; valid bounds are "
                                  f"{sorted(SPACE[axis])}")
            _check(SPACE[axis][key], value, f"space.{axis}.{key}", path)
    if config["data"]["digit_min"] > config["data"]["digit_max"]:
        raise ConfigError(f"{path}: data.digit_min ({config['data']['digit_min']}) is above data.digit_max "
                          f"({config['data']['digit_max']})")


def _check(rule: Rule, value, where: str, path) -> None:
    wrong = rule(value)
    if wrong:
        raise ConfigError(f"{path}: {where} must be {wrong}, got {value!r}")
