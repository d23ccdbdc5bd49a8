"""A per-component latency lookup table: measured once per (device, runtime, dtype, batch, threads, base
model), cached as JSON, and summed to predict any subnet's latency without building it.

Components are the very modules an extracted subnet is made of (``supernet.subnet``), timed alone:
the stem + head at each width, each block's mixer (MSA with/without returning its class-token attention,
or conv) and MLP at each width and token count, the norms + residuals, and token dropping. Their sum
misses (or double-counts) the overhead of running them in one model, so measured anchors — the full-depth
and the smallest-depth subnet, each at the widest and the narrowest embedding — fit a fixed and a
per-block overhead, interpolated linearly in embedding width:
``predict = scale × (raw_sum + offset(e) + depth × per_block(e))``. ``anchor`` re-measures the largest subnet
at the start of a run and updates ``scale`` to absorb machine drift.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from supernet import SubnetConfig, build_subnet
from supernet.gates import UnitCosts
from supernet.scorers import SCORERS, build_scorer
from supernet.space import tokens_kept
from supernet.subnet import Attention, ConvMixer, Mlp, ModelSpec, drop_tokens

from .latency import measure_latency_interleaved, resolve_device


def device_name(device: torch.device) -> str:
    """The hardware, not just 'cpu': tables from another machine must not be reused."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


class _Rest(nn.Module):
    """The two norms and residual adds of a block (its mixer and MLP are timed separately)."""

    def __init__(self, spec: ModelSpec, dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.norm2 = nn.LayerNorm(dim, eps=spec.norm_eps)

    def forward(self, x):
        x = x + self.norm1(x)
        return x + self.norm2(x)


class _Drop(nn.Module):
    """Scoring the tokens (with the given scorer) and gathering the kept ones."""

    def __init__(self, spec: ModelSpec, scorer: str, dim: int, keep: int):
        super().__init__()
        self.keep = keep
        self.scorer = build_scorer(scorer, dim, spec.embed_dim)

    def forward(self, x):
        return drop_tokens(x, self.scorer(x, x[:, 1:, 0]), self.keep)


@dataclass
class LatencyTable:
    key: dict
    entries: dict[str, float]
    mlp_grid: list[int] = field(default_factory=list)
    overhead_dims: list[int] = field(default_factory=lambda: [0])   # embedding widths of the anchors
    offset_ms: list[float] = field(default_factory=lambda: [0.0])
    per_block_ms: list[float] = field(default_factory=lambda: [0.0])
    scale: float = 1.0
    scorer: str = "cls_attention"  # the token scorer subnets use (every registered one is timed)

    # --- prediction -------------------------------------------------------------------------------
    def _mlp(self, e: int, m: int, n: int) -> float:
        """MLP entries are measured on a subset of widths; linear in between (MLP cost is linear in m)."""
        xs = self.mlp_grid
        ys = [self.entries[f"mlp/{e}/{g}/{n}"] for g in xs]
        return float(np.interp(m, xs, ys))

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict({**self.key["model"], "scorer": self.scorer})

    def predict_raw(self, cfg: SubnetConfig) -> float:
        """Components plus the fitted overheads, before ``scale``."""
        e = cfg.embed_dim
        offset = np.interp(e, self.overhead_dims, self.offset_ms)
        per_block = np.interp(e, self.overhead_dims, self.per_block_ms)
        return float(self._components(cfg) + offset + cfg.depth * per_block)

    def _components(self, cfg: SubnetConfig) -> float:
        spec, e = self.spec, cfg.embed_dim
        total = self.entries[f"base/{e}"]
        model = build_subnet(spec, cfg, device="meta")  # free: only the shape decisions are read
        entering = spec.num_patches
        for i, blk in enumerate(model.blocks):
            n = blk.keep_tokens if blk.keep_tokens is not None else entering
            if blk.keep_tokens is not None:
                total += self.entries[f"drop/{self.scorer}/{e}/{n}"]
            if cfg.ops[i] == "msa":
                total += self.entries[f"msa/{e}/{cfg.heads[i]}/{n}/{int(blk.mixer.return_cls_attn)}"]
            else:
                total += self.entries[f"conv/{e}/{cfg.heads[i]}"]
            total += self._mlp(e, cfg.mlp[i], n) + self.entries[f"rest/{e}/{n}"]
            entering = n
        return total

    def predict(self, cfg: SubnetConfig) -> float:
        """Predicted latency of the extracted subnet ``cfg``, in ms, in this table's runtime."""
        return self.predict_raw(cfg) * self.scale

    def anchor(self, cfg: SubnetConfig, measured_ms: float) -> float:
        """Re-scale so ``cfg`` (the largest subnet) predicts its fresh measurement; returns the new scale."""
        self.scale = measured_ms / self.predict_raw(cfg)
        return self.scale

    def unit_costs(self, space) -> UnitCosts:
        """What one unit of each axis costs in the full model (ms), by differences of predictions."""
        big = space.largest()
        total = self.predict(big)
        D = big.depth

        def saving(**change) -> float:
            return total - self.predict(replace(big, **change))

        def per_unit(axis, key: str, blocks: int) -> float:
            span = (axis.max - axis.min) * blocks
            return saving(**{key: axis.min if key == "embed_dim" else [axis.min] * D}) / span if span else 0.0

        d = space.depth.min
        shallow = dict(depth=d, heads=big.heads[:d], mlp=big.mlp[:d], ops=big.ops[:d], keep=big.keep[:d])
        return UnitCosts(
            total=total, embed=per_unit(space.embed_dim, "embed_dim", 1), head=per_unit(space.heads, "heads", D),
            mlp=per_unit(space.mlp, "mlp", D), block=saving(**shallow) / (D - d) if D > d else 0.0,
            conv_saving=saving(ops=["conv"] * D) / D if "conv" in space.ops else 0.0)

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, supernet, device="cpu", batch_size: int = 1, threads: int | None = None,
              runtime: str = "torch-eager", warmup: int = 3, repeats: int = 7,
              max_mlp_points: int = 8, progress: bool = True) -> "LatencyTable":
        """Time every component of ``supernet``'s space, then anchor on the largest subnet."""
        if runtime != "torch-eager":
            raise ValueError(f"the latency table is measured in torch-eager only, not {runtime!r}; "
                             "measure other runtimes with measure_latency on the extracted model")
        dev = resolve_device(device)
        spec, space = supernet.spec, supernet.space
        threads = threads or torch.get_num_threads()
        tokens = sorted({tokens_kept(k, spec.num_patches) for k in space.keep.choices})
        mlps = space.mlp.choices
        idx = np.unique(np.linspace(0, len(mlps) - 1, min(max_mlp_points, len(mlps))).round().astype(int))
        mlp_grid = [mlps[i] for i in idx]

        jobs = []  # (entry name, module, per-sample input shape)
        for e in space.embed_dim.choices:
            jobs.append((f"base/{e}", build_subnet(spec, _empty_cfg(e)), (spec.in_chans, *spec.img_size)))
            for n in tokens:
                jobs.append((f"rest/{e}/{n}", _Rest(spec, e), (n + 1, e)))
                for m in mlp_grid:
                    jobs.append((f"mlp/{e}/{m}/{n}", Mlp(spec, e, m), (n + 1, e)))
                if n < spec.num_patches:
                    for scorer in SCORERS:
                        jobs.append((f"drop/{scorer}/{e}/{n}", _Drop(spec, scorer, e, n), (spec.num_patches + 1, e)))
                for h in space.heads.choices:
                    for ret in (0, 1):
                        jobs.append((f"msa/{e}/{h}/{n}/{ret}", Attention(spec, e, h, bool(ret)), (n + 1, e)))
            if "conv" in space.ops:
                for h in space.heads.choices:
                    jobs.append((f"conv/{e}/{h}", ConvMixer(spec, e, h), (spec.num_patches + 1, e)))
        entries = {}
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for name, module, shape in tqdm(jobs, desc="latency table", disable=not progress, leave=False):
                entries[name] = _component_ms(module, (batch_size, *shape), dev, warmup, repeats)
        finally:
            torch.set_num_threads(previous_threads)
        key = table_key(spec, space, dev, batch_size, threads, runtime)
        table = cls(key=key, entries=entries, mlp_grid=mlp_grid, scorer=spec.scorer)
        shape = (spec.in_chans, *spec.img_size)
        table.overhead_dims, table.offset_ms, table.per_block_ms = [], [], []
        for e in sorted({space.embed_dim.min, space.embed_dim.max}):
            deep = space.largest()
            deep.embed_dim = e
            shallow = SubnetConfig(e, space.depth.min, *(getattr(deep, k)[:space.depth.min]
                                                         for k in ("heads", "mlp", "ops", "keep")))
            measured = measure_latency_interleaved(
                {"deep": supernet.extract(deep), "shallow": supernet.extract(shallow)},
                shape, dev, batch_size, threads, 10, 50)
            gap_deep = measured["deep"].median_ms - table._components(deep)
            gap_shallow = measured["shallow"].median_ms - table._components(shallow)
            per_block = (gap_deep - gap_shallow) / (deep.depth - shallow.depth) if deep.depth > shallow.depth else 0.0
            table.overhead_dims.append(e)
            table.per_block_ms.append(per_block)
            table.offset_ms.append(gap_deep - deep.depth * per_block)
        return table

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def cached(cls, supernet, cache: str | Path, device="cpu", batch_size: int = 1,
               threads: int | None = None, runtime: str = "torch-eager", progress: bool = True) -> "LatencyTable":
        """Load the table for this key from ``cache``, or build and store it."""
        dev = resolve_device(device)
        threads = threads or torch.get_num_threads()
        key = table_key(supernet.spec, supernet.space, dev, batch_size, threads, runtime)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache) / f"lut-{digest}.json"
        if path.is_file():
            table = cls.load(path)
            if table.key == key:
                table.scorer = supernet.spec.scorer
                return table
        table = cls.build(supernet, dev, batch_size, threads, runtime, progress=progress)
        table.save(path)
        return table


@torch.inference_mode()
def _component_ms(module: nn.Module, shape, device: torch.device, warmup: int, repeats: int,
                  calls: int = 10) -> float:
    """Median time per call over runs of ``calls`` back-to-back calls, synchronised once per run.

    Inside a model, a GPU overlaps each component's kernel launches with the previous one's work, so
    synchronising around every single call would over-count small components (on a CPU both agree).
    """
    module = module.to(device).eval()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        module(x)
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            module(x)
        sync()
        times.append((time.perf_counter() - start) * 1e3 / calls)
    return float(np.median(times))


def table_key(spec: ModelSpec, space, device: torch.device, batch_size: int, threads: int, runtime: str) -> dict:
    key = {"format": 3, "device": device.type, "hardware": device_name(device), "runtime": runtime,
           "dtype": "float32", "batch_size": batch_size, "threads": threads, "torch": torch.__version__,
           "model": {**spec.to_dict(), "scorer": "*"}, "space": repr(space)}  # all scorers are timed
    return json.loads(json.dumps(key))  # as it reads back from the cache file (tuples become lists)


def _empty_cfg(e: int) -> SubnetConfig:
    return SubnetConfig(embed_dim=e, depth=0, heads=[], mlp=[], ops=[], keep=[])
