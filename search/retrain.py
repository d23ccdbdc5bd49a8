"""Finish a winner: extract the physical subnet and fine-tune it with distillation from the base model."""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import TensorDataset

from evaluators import evaluate_accuracy
from evaluators.data import make_loader
from supernet import ConfigError, SubnetConfig
from supernet.storage import load_state, write_atomic
from supernet.train import announcer, distill_loss, fit

from .cache import cache_dir
from .export import save_subnet
from .remeasure import fresh_metrics
from .results import load_results, run_settings
from .setup import Prepared, check_workload, ensure_supernet, prepare

# Distil from the base model as trained (its own weights; the supernet works on a copy). Measured against the
# supernet's sandwich-trained largest subnet as teacher: benchmarks/teacher.py (README, the `retrain` entry).
TEACHER = "the base model"


@torch.no_grad()
def teacher_outputs(teacher, data: TensorDataset, device, log=print) -> torch.Tensor:
    """The teacher's logits on every image of ``data``, cached by the teacher's weights and the images: on the
    bundled workload this pass is a third of a retrain, the same for every subnet retrained from one base."""
    path = cache_dir() / "teacher" / f"{_digest(teacher, data.tensors[0])}.pt"
    known = load_state(path, "cpu", log, "computing the teacher's logits again")
    if known is not None and known.shape[0] == len(data):
        return known
    logits = torch.cat([teacher(x.to(device)).float().cpu() for x, *_ in make_loader(data, 256)])
    write_atomic(path, lambda tmp: torch.save(logits, tmp))
    return logits


def _digest(model: torch.nn.Module, images: torch.Tensor) -> str:
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in [*model.state_dict().items(), ("images", images)]:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:16]


def finetune(model, teacher, train_set, cfg: dict, device, desc: str = "retrain", log=print) -> list[dict]:
    """``fit`` on (1 - kd_weight) · CE + kd_weight · KL(student ‖ teacher at temperature)."""
    torch.manual_seed(cfg["seed"])
    model.to(device).train()
    teacher.to(device).eval()
    if isinstance(train_set, TensorDataset):  # fixed images, no random augmentation: the teacher's answers are
        train_set = TensorDataset(*train_set.tensors, teacher_outputs(teacher, train_set, device, log))  # computed once
    loader = make_loader(train_set, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
    w = cfg["kd_weight"]

    def loss(logits, y, x, *known):
        if not known:
            with torch.no_grad():
                known = (teacher(x),)
        return (1 - w) * F.cross_entropy(logits, y) + w * distill_loss(logits, known[0], cfg["temperature"])

    return fit(model, loader, cfg["epochs"], loss, cfg["lr"], 0.05, device=device, desc=desc,
               announce=announcer(log, desc))


def retrain(p: Prepared, cfg: SubnetConfig, out: Path, epochs: int | None = None, log=print) -> dict:
    """Fine-tune ``cfg``'s extracted model; write model.safetensors, subnet.yaml and metrics.json (accuracy
    before and after; latency is the caller's, measured the way it reports it) into ``out``."""
    settings = dict(p.config["retrain"], **({"epochs": epochs} if epochs is not None else {}))
    if settings["epochs"] < 1:
        raise ConfigError(f"--epochs must be at least 1, got {settings['epochs']}")
    p.sn.space.validate(cfg)
    model = p.sn.extract(cfg)
    splits, dev = p.workload.splits, p.device
    before = {s: evaluate_accuracy(model, splits[s], device=dev) for s in ("val", "test")}
    start = time.perf_counter()
    history = finetune(model, p.workload.model, splits["train"], settings, dev, log=log)
    seconds = round(time.perf_counter() - start, 1)
    model.eval()
    after = {s: evaluate_accuracy(model, splits[s], device=dev) for s in ("val", "test")}
    metrics = {"val_top1_before": before["val"], "test_top1_before": before["test"], "val_top1": after["val"],
               "test_top1": after["test"], "seconds": seconds, "settings": settings, "history": history, "teacher": TEACHER,
               "base_checkpoint_hash": p.workload.checkpoint_hash}
    out.mkdir(parents=True, exist_ok=True)
    save_subnet(model, out / "model.safetensors")
    write_metrics(cfg, metrics, out)
    log(f"retrained in {seconds:.0f} s: val {before['val']:.1%} -> {after['val']:.1%}, test {before['test']:.1%} -> "
        f"{after['test']:.1%}")
    return metrics


def write_metrics(cfg: SubnetConfig, metrics: dict, out: Path) -> None:
    """metrics.json, and subnet.yaml with the scalar metrics (a config file a person reads)."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float, bool)) or k == "runtime"}
    cfg.to_yaml(out / "subnet.yaml", extra={"metrics": scalars})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))


def resolve_target(target: str, trial: int | None, config_path) -> tuple[SubnetConfig, str | None, dict]:
    """A subnet YAML, or a results folder plus ``--trial`` -> (config, workload config path, the measurement
    setting the search used, so a winner is re-timed in the runtime it was chosen for)."""
    path = Path(target)
    if path.is_dir():
        if trial is None:
            raise ConfigError(f"{target} is a results folder: pass --trial N (see `python -m search show {target}`)")
        settings = run_settings(path)
        return load_results(path).config(trial), config_path or settings.get("config_path"), settings.get("latency", {})
    if not path.is_file():
        raise ConfigError(f"{target} is neither a subnet YAML nor a results folder")
    cfg = SubnetConfig.from_yaml(path)  # a malformed file fails here, with its name and line
    provenance = yaml.safe_load(path.read_text()).get("provenance") or {}
    latency = {k: provenance[k] for k in ("device", "runtime", "dtype", "batch_size", "threads") if k in provenance}
    return cfg, check_workload(provenance, config_path, path), latency


def retrain_command(target: str, trial: int | None = None, epochs: int | None = None, out=None, config_path=None,
                    latency: dict | None = None, log=print) -> dict:
    cfg, config_path, searched_in = resolve_target(target, trial, config_path)
    given = {k: v for k, v in (latency or {}).items() if v is not None}
    p = prepare(config_path, log=log, **(searched_in | given))
    ensure_supernet(p, log=log)
    out = Path(out) if out else Path("results") / p.config["name"] / (f"retrain-trial{trial}" if trial is not None
                                                                      else f"retrain-{Path(target).stem}")
    metrics = retrain(p, cfg, out, epochs, log)
    log(f"re-measuring it in a fresh process ({p.setting.describe()})")
    metrics |= fresh_metrics(p, out)
    write_metrics(cfg, metrics, out)
    log(f"retrained model: {metrics['latency']}")
    return metrics
