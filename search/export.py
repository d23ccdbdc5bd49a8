"""Export one trial's subnet: its config (YAML), the extracted model (safetensors, with the model spec and
config in the file's metadata) and an ONNX file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from evaluators.runtimes.onnxruntime import export_onnx

from .results import load_results
from .run import ensure_supernet, prepare


def export_command(results_dir, trial: int, to, log=print) -> Path:
    results = load_results(results_dir)
    cfg = results.config(trial)
    run = Path(results_dir) / "run.json"
    settings = json.loads(run.read_text())["settings"] if run.is_file() else {}
    p = prepare(settings.get("config_path"), "cpu", log=log)
    ensure_supernet(p, log=log)
    model = p.sn.extract(cfg).eval()
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    row = results.trials[results.trials["number"] == trial].iloc[0]
    metrics = {k: float(row[k]) for k in ("val_top1", "measured_ms", "predicted_ms") if k in row and row[k] == row[k]}
    cfg.to_yaml(to / "subnet.yaml", extra={"metrics": metrics, "provenance": {
        "trial": trial, "results": str(Path(results_dir).resolve()), "base_checkpoint_hash": p.workload.checkpoint_hash}})
    meta = {"spec": json.dumps(p.sn.spec.to_dict()), "config": json.dumps(cfg.to_dict())}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(to / "model.safetensors"), metadata=meta)
    export_onnx(model, torch.zeros(1, *p.workload.input_shape), to / "model.onnx")
    log(f"wrote {to}/subnet.yaml, model.safetensors, model.onnx (trial {trial})")
    return to
