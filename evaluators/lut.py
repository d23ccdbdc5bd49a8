"""The latency predictor: a table of per-term costs, fitted on the spot to extracted subnets measured on this
machine, in the runtime named, and refitted from every subnet a search measures.

Why fitted and not summed from components timed alone: components timed one by one do not add up the same
way on every CPU, runtime or GPU (a table built that way on one 2-core Xeon was 9% off there and 37% off on
an AMD EPYC). Fitting to whole extracted subnets measures exactly what is predicted, in any runtime,
including ONNX runtimes where components cannot be timed apart.

A subnet is described by shape terms that scale with the work each part of it does (below, ``FEATURES``);
the table holds one non-negative cost per term, fitted by least squares on relative error to latencies
measured as *ratios to the base model* (timed interleaved in the same blocks, so machine drift cancels). A
prediction in ms is the predicted ratio times the base model's latency measured at the start of this run
(``anchor``).
"""
from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property, lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from tqdm import tqdm

from supernet import ModelSpec, SubnetConfig
from supernet.subnet import token_plan
from supernet.gates import UnitCosts
from supernet.storage import write_atomic

from .latency import LatencyMeter, LatencySetting
from .runtimes import ONNX_EXPORTERS, OnnxFileRuntime, get_runtime

FORMAT = 5
MIN_MARGIN = 0.1   # never skip a config predicted within 10% of the budget: one measurement's noise here
CALIBRATION = 40   # subnets a new table measures (the largest, the smallest, random ones): kept for good
RECENT = 160       # of the subnets searches measured since, the most recent kept: the machine drifts, and every
                   # measured trial refits the skip margin leaving each point out in turn (a bundled table had grown to
                   # 1,096 points, 0.35 s a trial; predicting each next point from the 200 before it was as close as from
                   # all before it: median 5.2% vs 5.9%, p90 14.3% vs 14.6%, 219 points)
FEATURES = (
    "fixed",            # per call: input copy, launch/dispatch of stem and head
    "stem",             # patch embedding and head, ∝ embedding width
    "blocks",           # per block: dispatch of its ~15 ops
    "tokens·embed",     # norms, residuals, LayerScale: elementwise over N×E
    "qkv+proj",         # N×E×heads×(2·qk + 2·v)/4: q, k, v and the output projection (head_dim each in the base)
    "attention",        # N²×heads×(qk + v)/2: the logits and the weighted sum of values
    "heads",            # per head: attention kernels run per head
    "cls attention",    # N²×heads in blocks that materialise attention for a later token drop
    "mlp",              # N×E×M
    "mlp units",        # N×M: the activation
    "token drops",      # per drop: scoring, top-k, gather
    "scored tokens",    # (N entering)×E at each drop: the scorer's work
    "conv blocks",      # per SPViT conv block
    "conv",             # N×(heads·v)×9 + N×E×(heads·v)
)


def features(spec, cfg: SubnetConfig) -> np.ndarray:
    """The shape terms of ``cfg``'s extracted subnet (see ``FEATURES``); read-only, cached (every refit reads
    every point again)."""
    return _features(spec, cfg.key())


@lru_cache(maxsize=65536)
def _features(spec, key: tuple) -> np.ndarray:
    cfg = SubnetConfig(key[0], key[1], *(None if v is None else list(v) for v in key[2:]))
    f = dict.fromkeys(FEATURES, 0.0)
    E = cfg.embed_dim
    qk, v = cfg.head_widths(spec.head_dim)
    f["fixed"], f["stem"] = 1.0, E
    entering = spec.num_patches
    for i, (keep, returns_map) in enumerate(token_plan(spec, cfg)):
        n = keep if keep is not None else entering
        N, h, M = n + 1, cfg.heads[i], cfg.mlp[i]
        if keep is not None:
            f["token drops"] += 1
            f["scored tokens"] += (entering + 1) * E
        f["blocks"] += 1
        f["tokens·embed"] += N * E
        if cfg.ops[i] == "msa":
            f["qkv+proj"] += N * E * h * (2 * qk[i] + 2 * v[i]) / 4
            f["attention"] += N * N * h * (qk[i] + v[i]) / 2
            f["heads"] += cfg.heads[i]
            f["cls attention"] += N * N * cfg.heads[i] if returns_map else 0
        else:
            f["conv blocks"] += 1
            f["conv"] += N * h * v[i] * 9 + N * E * h * v[i]
        f["mlp"] += N * E * M
        f["mlp units"] += N * M
        entering = n
    row = np.array([f[k] for k in FEATURES])
    row.flags.writeable = False
    return row


@dataclass
class LatencyTable:
    key: dict
    points: list[tuple[dict, float]] = field(default_factory=list)   # (config, measured ratio to the base)
    costs: list[float] = field(default_factory=list)                 # one per FEATURES term, in base units
    base_ms: float = 1.0          # the base model's latency this run (``anchor``): predictions are ratios × this

    def __post_init__(self):
        self._margin: float | None = None  # skip_factor's, for the points of the last fit: not stored

    # --- prediction -------------------------------------------------------------------------------
    @cached_property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dict(self.key["model"])

    def predict_ratio(self, cfg: SubnetConfig) -> float:
        """Predicted latency of the extracted ``cfg`` as a fraction of the base model's."""
        return float(features(self.spec, cfg) @ np.asarray(self.costs))

    def predict(self, cfg: SubnetConfig) -> float:
        """Predicted latency of the extracted subnet ``cfg``, in ms, in this table's runtime."""
        return self.predict_ratio(cfg) * self.base_ms

    def anchor(self, base_ms: float) -> None:
        """Predict in ms relative to the base model's latency as measured now (absorbs today's drift)."""
        self.base_ms = base_ms

    def add(self, cfg: SubnetConfig, ratio: float) -> None:
        """Learn from one more measured subnet (refits; the oldest searched point beyond ``RECENT`` is forgotten)."""
        self.points.append((cfg.to_dict(), float(ratio)))
        del self.points[CALIBRATION:-RECENT]
        self.fit()

    def fit(self) -> None:
        """Non-negative costs minimising the squared *relative* error over every point."""
        X, y = self._data()
        self.costs = _solve(X, y).tolist()
        self._margin = None  # the skip margin reads the same points: recomputed when next asked

    def skip_factor(self) -> float:
        """How far over a budget a prediction must be for the search to skip the config unmeasured: 1 + the
        largest over-prediction of any point predicted by a fit that left it out (at least ``MIN_MARGIN``).
        It follows this table's own error on this machine and runtime instead of a constant."""
        if self._margin is None:
            X, y = self._data()
            over = [float(X[i] @ _solve(np.delete(X, i, 0), np.delete(y, i)) / y[i] - 1) for i in range(len(y))]
            self._margin = 1 + max([MIN_MARGIN, *over])
        return self._margin

    def _data(self) -> tuple[np.ndarray, np.ndarray]:
        X = np.stack([features(self.spec, SubnetConfig.from_dict(c)) for c, _ in self.points])
        return X, np.array([r for _, r in self.points])

    def errors(self, points) -> np.ndarray:
        """Relative errors |predicted - measured| / measured of (config, ratio) pairs."""
        return np.array([abs(self.predict_ratio(SubnetConfig.from_dict(c)) - r) / r for c, r in points])

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
        shallow = dict(depth=d, heads=big.heads[:d], mlp=big.mlp[:d], ops=big.ops[:d], keep=big.keep[:d],
                       qk=big.qk[:d], v=big.v[:d])
        return UnitCosts(
            total=total, embed=per_unit(space.embed_dim, "embed_dim", 1), head=per_unit(space.heads, "heads", D),
            qk=per_unit(space.qk, "qk", D), v=per_unit(space.v, "v", D), mlp=per_unit(space.mlp, "mlp", D), block=saving(**shallow) / (D - d) if D > d else 0.0,
            conv_saving=saving(ops=["conv"] * D) / D if "conv" in space.ops else 0.0)

    # --- building ---------------------------------------------------------------------------------
    @classmethod
    def build(cls, supernet, setting: LatencySetting, samples: int = CALIBRATION, seed: int = 0,
              meter: LatencyMeter | None = None, progress: bool = True) -> "LatencyTable":
        """Measure ``samples`` extracted subnets (the largest, the smallest and random ones), each interleaved
        with the base model (``meter``'s reference, default ``supernet.vit``), and fit the costs to their ratios."""
        space = supernet.space
        shape = (supernet.spec.in_chans, *supernet.spec.img_size)
        meter = meter or LatencyMeter(setting, shape, reference=supernet.vit)
        rng = np.random.default_rng(seed)
        configs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(max(0, samples - 2))]
        table = cls(key=table_key(supernet, setting))
        for cfg in tqdm(configs, desc=f"latency calibration ({setting.runtime})", disable=not progress,
                        leave=False):
            table.points.append((cfg.to_dict(), meter.measure(supernet.extract(cfg)).ratio))
        table.base_ms = meter.reference_latency.median_ms
        table.fit()
        return table

    # --- persistence ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        text = json.dumps(asdict(self), indent=1)
        write_atomic(path, lambda tmp: tmp.write_text(text))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        d = json.loads(Path(path).read_text())
        d["points"] = [tuple(p) for p in d["points"]]
        return cls(**d)

    @classmethod
    def cached(cls, supernet, setting: LatencySetting, cache: str | Path, meter: LatencyMeter | None = None,
               progress: bool = True) -> "LatencyTable":
        """The table for this supernet and setting from ``cache``; built (calibrated) and stored if missing."""
        path = table_path(supernet, setting, cache)
        if path.is_file():
            try:
                table = cls.load(path)
            except (OSError, ValueError, TypeError, KeyError) as e:
                print(f"latency table {path} is unreadable ({type(e).__name__}: {e}); calibrating a new one")
            else:
                if table.key == table_key(supernet, setting):
                    return table
        table = cls.build(supernet, setting, meter=meter, progress=progress)
        table.save(path)
        return table


def _solve(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative w minimising sum(((X @ w) / y - 1)²)."""
    scale = np.maximum(X.max(axis=0), 1e-12)          # columns to [0, 1]: a well-conditioned solve
    w, _ = nnls((X / scale) / y[:, None], np.ones(len(y)))
    return w / scale


def table_path(supernet, setting: LatencySetting, cache: str | Path) -> Path:
    digest = hashlib.sha256(json.dumps(table_key(supernet, setting), sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache) / f"lut-{digest}.json"


def hardware_name(device: torch.device) -> str:
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


def _version(package: str | None) -> str | None:
    try:
        return version(package) if package else None
    except PackageNotFoundError:
        return None


def table_key(supernet, setting: LatencySetting) -> dict:
    """What a table is valid for: the setting, this hardware and software, the model (token scorer
    included: a scorer with weights costs what a parameter-free one does not) and its space."""
    spec = supernet.spec
    runtime = get_runtime(setting.runtime)
    key = {"format": FORMAT, **setting.identity(), "hardware": hardware_name(setting.torch_device),
           "torch": torch.__version__, "runtime_version": _version(runtime.package),
           "model": spec.to_dict(), "space": repr(supernet.space)}
    if isinstance(runtime, OnnxFileRuntime):  # the exporter shapes the graph the runtime times (1-2% here)
        key["onnx_exporters"] = [f.__name__ for f in ONNX_EXPORTERS]
    return json.loads(json.dumps(key))  # as it reads back from the cache file (tuples become lists)
