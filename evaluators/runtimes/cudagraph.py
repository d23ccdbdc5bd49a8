"""The "cudagraph" runtime: the forward captured once as a CUDA graph and replayed. At batch sizes where
kernel launches dominate (batch 1 on a fast GPU, where eager DeiT-T/S/B all take 3-5 ms), this is what a
deployment runs and what decides which axes pay off."""

from __future__ import annotations

import torch

from . import Runtime, register_runtime
from .torch_eager import FLOATS


@register_runtime
class CudaGraph(Runtime):
    name = "cudagraph"
    summary = "CUDA graph capture + replay (the GPU default: eager at small batch measures launches)"
    dtypes = {"cuda": FLOATS}

    def prepare(self, model, example, threads, workdir):
        model.to(device=example.device, dtype=example.dtype)
        static = example.clone()
        side = torch.cuda.Stream(example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # lazy initialisation (cuBLAS handles, workspaces) must happen before capture
                model(static)
        torch.cuda.current_stream(example.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out = model(static)

        def replay():
            graph.replay()
            return out  # rewritten in place by each replay

        # The graph reads the model's weights and `static` at every replay but holds no reference to them: a
        # model copied for timing (another dtype) would be freed on return and replays would read freed memory.
        replay.keep_alive = (model, static)
        return replay
