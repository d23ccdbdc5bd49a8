"""Export one trial's subnet: its config (YAML), the extracted model (safetensors, with the model spec and
config in the file's metadata) and an ONNX file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from evaluators.runtimes.onnxruntime import export_onnx

from .results import load_results, run_settings
from .run import ensure_supernet, prepare


def save_subnet(model, path: Path) -> None:
    """The extracted model's weights, with its spec and config in the file's metadata (enough to rebuild it)."""
    meta = {"spec": json.dumps(model.spec.to_dict()), "config": json.dumps(model.cfg.to_dict())}
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(path), metadata=meta)


def export_command(results_dir, trial: int, to, log=print) -> Path:
    results = load_results(results_dir)
    cfg = results.config(trial)
    p = prepare(run_settings(results_dir).get("config_path"), "cpu", log=log)
    ensure_supernet(p, log=log)
    model = p.sn.extract(cfg).eval()
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    row = results.trials[results.trials["number"] == trial].iloc[0]
    metrics = {k: float(row[k]) for k in ("val_top1", "measured_ms", "predicted_ms") if k in row and row[k] == row[k]}
    cfg.to_yaml(to / "subnet.yaml", extra={"metrics": metrics, "provenance": {
        "trial": trial, "results": str(Path(results_dir).resolve()), "base_checkpoint_hash": p.workload.checkpoint_hash}})
    save_subnet(model, to / "model.safetensors")
    export_onnx(model, torch.zeros(1, *p.workload.input_shape), to / "model.onnx")
    log(f"wrote {to}/subnet.yaml, model.safetensors, model.onnx (trial {trial})")
    return to
