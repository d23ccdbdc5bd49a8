"""The search space: bounds and steps per axis, sampling, and the rules a valid subnet obeys."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .config import LISTS, OPS, ConfigError, SubnetConfig


@dataclass(frozen=True)
class IntAxis:
    """Values ``min..max`` on multiples of ``step``; ``max`` (the base model's value) is always allowed."""

    min: int
    max: int
    step: int = 1

    def __post_init__(self):
        if not 1 <= self.min <= self.max or self.step < 1:
            raise ConfigError(f"axis bounds min={self.min} max={self.max} step={self.step} are invalid; "
                              "need 1 <= min <= max and step >= 1")

    @property
    def choices(self) -> list[int]:
        first = math.ceil(self.min / self.step) * self.step
        return sorted(set(range(first, self.max + 1, self.step)) | {self.max})


@dataclass(frozen=True)
class KeepAxis:
    """Fractions of patch tokens; multiples of ``step`` from ``min`` up to 1.0."""

    min: float = 0.25
    step: float = 0.125

    def __post_init__(self):
        if not 0 < self.min <= 1 or not 0 < self.step <= 1:
            raise ConfigError(f"keep bounds min={self.min} step={self.step} are invalid; need 0 < min <= 1")

    @property
    def choices(self) -> list[float]:
        n = round(1 / self.step)
        values = {round(k * self.step, 6) for k in range(1, n + 1) if k * self.step >= self.min - 1e-9}
        return sorted(values | {1.0})


def tokens_kept(keep: float, num_patches: int) -> int:
    """Patch tokens entering a block with keep fraction ``keep``: ceil(keep * N), at least 1."""
    return max(1, math.ceil(keep * num_patches - 1e-9))


@dataclass(frozen=True)
class SearchSpace:
    embed_dim: IntAxis
    depth: IntAxis
    heads: IntAxis
    qk: IntAxis      # query/key width of each head (fixed at the head width where the model normalises q, k)
    v: IntAxis       # value width of each head
    mlp: IntAxis
    keep: KeepAxis
    ops: tuple[str, ...]
    num_patches: int

    @classmethod
    def for_model(cls, embed_dim: int, depth: int, num_heads: int, mlp_hidden: int, num_patches: int,
                  bounds: dict | None = None, head_dim: int = 64, qk_norm: bool = False) -> "SearchSpace":
        """Default bounds (overridable per axis by ``bounds``, e.g. ``{"mlp": {"min": 64, "step": 32}}``).

        Defaults are hardware-friendly: channels in multiples of 16 (embed, head widths) and 32 (MLP), whole
        heads, tokens in eighths; the lower bounds leave a quarter of width, depth and tokens. A model whose
        attention normalises q and k over the whole head width (``qk_norm``) keeps its query/key width.
        """
        bounds = dict(bounds or {})
        valid = {"embed_dim", "depth", "heads", "qk", "v", "mlp", "keep", "ops"}
        if set(bounds) - valid:
            raise ConfigError(f"unknown search-space axis {sorted(set(bounds) - valid)}; valid axes are "
                              f"{sorted(valid)}")

        def axis(name, maximum, step, minimum):
            b = bounds.get(name, {})
            step = int(b.get("step", step))
            lo = int(b.get("min", max(step, math.ceil(minimum / step) * step)))
            return IntAxis(min=min(lo, maximum), max=maximum, step=step)

        if qk_norm and bounds.get("qk", {}).get("min", head_dim) < head_dim:
            raise ConfigError(f"space.qk cannot go below the head width {head_dim}: this model normalises queries "
                              "and keys over the whole head (qk_norm)")
        width_step = min(16, max(1, head_dim // 2))  # at least two widths on a narrow head
        ops = tuple(bounds.get("ops", OPS))
        if not ops or set(ops) - set(OPS):
            raise ConfigError(f"space.ops {list(ops)} is invalid; choose from {list(OPS)}")
        return cls(
            embed_dim=axis("embed_dim", embed_dim, 16, embed_dim / 4),
            depth=axis("depth", depth, 1, max(1, depth // 4)),
            heads=axis("heads", num_heads, 1, 1),
            qk=axis("qk", head_dim, width_step, head_dim if qk_norm else head_dim / 4),
            v=axis("v", head_dim, width_step, head_dim / 4),
            mlp=axis("mlp", mlp_hidden, 32, mlp_hidden / 8),
            keep=KeepAxis(**bounds.get("keep", {})),
            ops=ops,
            num_patches=num_patches,
        )

    # --- canonical configs -------------------------------------------------------------------------
    def largest(self) -> SubnetConfig:
        d = self.depth.max
        return SubnetConfig(self.embed_dim.max, d, [self.heads.max] * d, [self.mlp.max] * d,
                            ["msa"] * d, [1.0] * d, [self.qk.max] * d, [self.v.max] * d)

    def smallest(self) -> SubnetConfig:
        """Every numeric axis at its lower bound, all blocks MSA (dropping tokens from block 0 rules out conv)."""
        d = self.depth.min
        return SubnetConfig(self.embed_dim.min, d, [self.heads.min] * d, [self.mlp.min] * d,
                            ["msa"] * d, [self.keep.choices[0]] * d, [self.qk.min] * d, [self.v.min] * d)

    def uniform(self, factor: float) -> SubnetConfig:
        """Every width of the largest subnet times ``factor``, rounded to its axis's grid and clipped to its
        bounds; every block, head and token kept (the shape a structured-pruning library's uniform ratio gives)."""
        def width(axis: IntAxis) -> int:
            return max(axis.min, min(axis.max, round(axis.max * factor / axis.step) * axis.step))
        big = self.largest()
        d = big.depth
        return replace(big, embed_dim=width(self.embed_dim), mlp=[width(self.mlp)] * d, qk=[width(self.qk)] * d,
                       v=[width(self.v)] * d)

    def uniform_shapes(self) -> list[SubnetConfig]:
        """Every distinct ``uniform`` shape narrower than the largest subnet, narrowest first."""
        shapes = {}
        for i in range(256):  # finer than any grid here (the finest, step 4 of 192, moves at 1/48)
            cfg = self.uniform(i / 256)
            shapes.setdefault(cfg.key(), cfg)
        shapes.pop(self.largest().key(), None)
        return list(shapes.values())

    def sample(self, rng=None) -> SubnetConfig:
        """A uniformly drawn valid config. ``rng``: a numpy Generator or a seed."""
        rng = np.random.default_rng(rng)
        pick = lambda values: values[int(rng.integers(len(values)))]  # noqa: E731
        d = pick(self.depth.choices)
        # tokens: full up to a random first-drop block, then a non-increasing run of fractions below 1
        first_drop = int(rng.integers(d + 1))
        below_one = [k for k in self.keep.choices if k < 1.0] or [1.0]
        drops = sorted((pick(below_one) for _ in range(d - first_drop)), reverse=True)
        keep = [1.0] * first_drop + drops
        ops = [pick(self.ops) if i < first_drop else "msa" for i in range(d)]
        if "msa" not in self.ops:
            ops = ["conv"] * d
            keep = [1.0] * d
        return SubnetConfig(
            embed_dim=pick(self.embed_dim.choices), depth=d,
            heads=[pick(self.heads.choices) for _ in range(d)],
            mlp=[pick(self.mlp.choices) for _ in range(d)],
            ops=ops, keep=keep,
            qk=[pick(self.qk.choices) for _ in range(d)],
            v=[pick(self.v.choices) for _ in range(d)],
        )

    # --- validation --------------------------------------------------------------------------------
    def validate(self, cfg: SubnetConfig) -> SubnetConfig:
        """Return ``cfg`` if valid, else raise ConfigError naming the first broken rule."""
        def check_int(name, value, axis: IntAxis):
            if value not in axis.choices:
                raise ConfigError(f"{name}={value} is not allowed: choose a multiple of {axis.step} in "
                                  f"[{axis.min}, {axis.max}] (or {axis.max}); allowed: {axis.choices}")

        check_int("embed_dim", cfg.embed_dim, self.embed_dim)
        check_int("depth", cfg.depth, self.depth)
        for key in LISTS:
            if getattr(cfg, key) is not None and len(getattr(cfg, key)) != cfg.depth:
                raise ConfigError(f"{key} has {len(getattr(cfg, key))} entries but depth is {cfg.depth}: give "
                                  "one per kept block")
        qk, v = cfg.head_widths(self.qk.max)
        for i in range(cfg.depth):
            check_int(f"heads[{i}]", cfg.heads[i], self.heads)
            check_int(f"qk[{i}]", qk[i], self.qk)
            check_int(f"v[{i}]", v[i], self.v)
            check_int(f"mlp[{i}]", cfg.mlp[i], self.mlp)
            if cfg.ops[i] not in self.ops:
                raise ConfigError(f"ops[{i}]={cfg.ops[i]!r} is not allowed; choose from {list(self.ops)}")
            if not any(abs(cfg.keep[i] - k) < 1e-6 for k in self.keep.choices):
                raise ConfigError(f"keep[{i}]={cfg.keep[i]} is not allowed; choose from {self.keep.choices}")
        for i in range(1, cfg.depth):
            if cfg.keep[i] > cfg.keep[i - 1] + 1e-9:
                raise ConfigError(f"keep must be non-increasing, but keep[{i}]={cfg.keep[i]} > "
                                  f"keep[{i - 1}]={cfg.keep[i - 1]}: dropped tokens cannot come back")
        for i in range(cfg.depth):
            if cfg.ops[i] == "conv" and cfg.keep[i] < 1.0:
                raise ConfigError(f"ops[{i}]='conv' but keep[{i}]={cfg.keep[i]} < 1: a conv block needs the "
                                  "full token grid, so conv may only come before the first block with keep < 1")
        return cfg

    def tokens(self, cfg: SubnetConfig) -> list[int]:
        """Patch tokens entering each kept block."""
        return [tokens_kept(k, self.num_patches) for k in cfg.keep]
