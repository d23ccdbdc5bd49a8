"""OpenVINO without torch: load a compiled model, and the child process that times ONNX files.

Run by path (``python ov_child.py``) with a JSON request on stdin; prints the per-call times as JSON. It
imports only numpy, openvino and ``timing.py`` beside it, so it starts in about half a second.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def load_openvino(path, data, threads: int):
    """A zero-arg callable running the ONNX file ``path`` on the numpy array ``data`` in OpenVINO's CPU
    plugin, in float32 (its CPU plugin would otherwise choose bf16 where the CPU has it)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "INFERENCE_PRECISION_HINT": "f32",
                                                         "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer([data])[0]  # the first output, as a numpy array


def main() -> None:
    import importlib.util

    import numpy as np

    # run by path, this folder is sys.path[0], where openvino.py would shadow the openvino package
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    spec = importlib.util.spec_from_file_location("timing", here / "timing.py")
    timing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timing)

    request = json.loads(sys.stdin.read())
    data = np.load(request["example"])
    calls = {name: load_openvino(path, data, request["threads"]) for name, path in request["files"].items()}
    print(json.dumps(timing.time_blocks(calls, request["warmup"], request["repeats"], request["block"])))


if __name__ == "__main__":
    main()
