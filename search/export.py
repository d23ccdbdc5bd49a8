"""Export one trial's subnet: its config (YAML), the extracted model (safetensors, with the model spec and
config in the file's metadata) and an ONNX file."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from evaluators.runtimes import export_onnx, get_runtime
from supernet import ConfigError, ModelSpec, SubnetConfig, build_subnet
from supernet.storage import write_atomic

from .results import load_results, run_settings
from .setup import ensure_supernet, prepare, workload_provenance


def save_subnet(model, path: Path) -> None:
    """The extracted model's weights, with its spec and config in the file's metadata (enough to rebuild it)."""
    meta = {"spec": json.dumps(model.spec.to_dict()), "config": json.dumps(model.cfg.to_dict())}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=meta))  # never half a model file


def load_subnet(path: str | Path):
    """The extracted model a ``save_subnet`` file holds (its spec and config are in the file's metadata)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
        spec, cfg = ModelSpec.from_dict(json.loads(meta["spec"])), SubnetConfig.from_dict(json.loads(meta["config"]))
    except (OSError, KeyError, ValueError) as e:
        raise ConfigError(f"{path} is not a vitnas subnet file ({type(e).__name__}: {e})") from None
    model = build_subnet(spec, cfg)
    model.load_state_dict(state)
    return model.eval()


def export_command(results_dir, trial: int, to, latency: dict | None = None, log=print) -> Path:
    """Write trial ``trial``'s subnet.yaml, model.safetensors and model.onnx into ``to`` (its retrained weights
    where the search retrained it, else the shared ones), and time the artefact its runtime runs (the ONNX file
    itself for onnxruntime/openvino) in the search's measurement setting, or the one ``latency`` asks for."""
    results = load_results(results_dir)
    cfg = results.config(trial)
    settings = run_settings(results_dir)
    given = {k: v for k, v in (latency or {}).items() if v is not None}
    p = prepare(settings.get("config_path"), log=log, **(settings.get("latency", {}) | given))
    retrained = Path(results_dir) / f"retrain-trial{trial}"  # where `run` retrained it: ship those weights
    if (retrained / "model.safetensors").is_file():
        model, weights = load_subnet(retrained / "model.safetensors"), "retrained"
        after = json.loads((retrained / "metrics.json").read_text())
    else:
        ensure_supernet(p, log=log)
        model, weights, after = p.sn.extract(cfg).eval(), "shared (not retrained: `retrain` trains it)", {}
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    save_subnet(model, to / "model.safetensors")
    lat = p.meter.measure(model, workdir=to)  # an ONNX runtime writes and times to/model.onnx
    timed = get_runtime(p.setting.runtime).artefact or "model.safetensors"
    if not (to / "model.onnx").is_file():
        export_onnx(model, torch.zeros(1, *p.workload.input_shape), to / "model.onnx")
    row = results.trials[results.trials["number"] == trial].iloc[0]
    metrics = {k: float(row[k]) for k in ("val_top1", "measured_ms", "predicted_ms") if k in row and row[k] == row[k]}
    metrics |= {"exported_ms": lat.at(p.base_latency.median_ms), "exported_ratio_to_base": lat.ratio,
                "exported_clock_ms": round(lat.median_ms, 4)}
    metrics |= {f"retrained_{k}": after[k] for k in ("val_top1", "test_top1") if k in after}
    cfg.to_yaml(to / "subnet.yaml", extra={"metrics": metrics, "provenance": {
        "trial": trial, "results": str(Path(results_dir).resolve()), **workload_provenance(p),
        **p.setting.identity(), "latency": str(lat), "timed": timed, "weights": weights}})
    log(f"wrote {to}/subnet.yaml, model.safetensors, model.onnx (trial {trial}, {weights} weights); "
        f"timed {timed}: {lat}, {lat.ratio:.2f}× the base model")
    return to
