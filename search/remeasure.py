"""Re-measure a shipped model in a fresh process, as a user who loads its file alone would run it: nothing
the search loaded, warmed up or allocated is there to flatter (or slow down) the figure.

    python -m search.remeasure '<request JSON>'     (run by ``remeasure_fresh``; prints one JSON line)

The base model is timed next to it, interleaved in blocks, in the same setting; its architecture is built
from the config (latency does not depend on weight values, so hub weights are not needed).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from evaluators import Latency, LatencyMeter, LatencySetting

ROOT = Path(__file__).resolve().parent.parent


def remeasure_fresh(model_cfg: dict, setting: LatencySetting, input_shape, model_path: Path,
                    workdir: Path) -> tuple[Latency, Latency]:
    """(the model's latency, the base model's), timed in a new process; an ONNX runtime's artefact is
    written into ``workdir`` (the file that was timed is the file shipped)."""
    request = {"model_cfg": model_cfg, "setting": asdict(setting), "input_shape": list(input_shape),
               "model": str(model_path), "workdir": str(workdir)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "search.remeasure", json.dumps(request)], capture_output=True,
                       text=True, env=env)
    if r.returncode:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"re-measuring {model_path} in a fresh process failed: {last}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return Latency(**d["model"]), Latency(**d["base"])


def fresh_metrics(p, folder: Path) -> dict:
    """The metrics.json fields of ``folder/model.safetensors`` re-measured in a fresh process next to the base
    model, in the run's measurement setting (``p``: the prepared run)."""
    from .workload import base_model_config

    model, base = remeasure_fresh(base_model_config(p.config), p.setting, p.workload.input_shape,
                                  folder / "model.safetensors", folder)
    return {"latency_ms": model.at(p.base_latency.median_ms), "ratio_to_base": model.ratio,
            "base_latency_ms": round(p.base_latency.median_ms, 4), "measured_in": "a fresh process",
            "clock_ms": round(model.median_ms, 4), "base_clock_ms": round(base.median_ms, 4),
            "latency": str(model), "base_latency": str(base), "runtime": model.runtime, "dtype": model.dtype}


def main(request: dict) -> dict:
    from .export import load_subnet
    from .workload import create_model

    setting = LatencySetting(**request["setting"])
    base = create_model(dict(request["model_cfg"], pretrained=False)).eval()
    meter = LatencyMeter(setting, request["input_shape"], reference=base)
    latency = meter.measure(load_subnet(request["model"]), workdir=request["workdir"])
    return {"model": asdict(latency), "base": asdict(meter.reference_latency)}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
