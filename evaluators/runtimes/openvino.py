"""The "openvino" runtime (``pip install "vitnas[openvino]"``): the ONNX export compiled by OpenVINO for
the CPU, in float32.

OpenVINO's worker threads keep spinning after an inference and slow whatever runs next in the process,
other models being timed included. So this runtime is ``isolated``: ``evaluators.latency`` exports the
models in the main process and ``time_files`` times them in a child process (``ov_child.py``, no torch)
that exits afterwards and takes its threads with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from . import OnnxFileRuntime, register_runtime
from .ov_child import load_openvino


@register_runtime
class OpenVino(OnnxFileRuntime):
    name = "openvino"
    summary = "the ONNX export compiled by OpenVINO for the CPU, timed in a child process"
    package = "openvino"
    install = 'pip install "vitnas[openvino]"'
    isolated = True

    def load(self, path, example, threads):
        return load_openvino(path, example.cpu().numpy(), threads)

    def time_files(self, files: dict[str, Path], example, setting) -> dict[str, list[float]]:
        folder = Path(next(iter(files.values()))).parent
        np.save(folder / "example.npy", example.cpu().numpy())
        request = {"files": {n: str(p) for n, p in files.items()}, "example": str(folder / "example.npy"),
                   "threads": setting.threads, "warmup": setting.warmup, "repeats": setting.repeats,
                   "block": setting.block}
        done = subprocess.run([sys.executable, str(Path(__file__).with_name("ov_child.py"))],
                              input=json.dumps(request), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"OpenVINO timing failed in its child process:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
