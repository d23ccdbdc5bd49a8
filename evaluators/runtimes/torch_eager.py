"""The "torch-eager" runtime: plain PyTorch, module called in inference mode."""

from __future__ import annotations

import torch

from . import Runtime, register_runtime

FLOATS = ("float32", "float16", "bfloat16")


@register_runtime
class TorchEager(Runtime):
    name = "torch-eager"
    summary = "plain PyTorch (the CPU default; on a GPU at small batch it is launch-bound)"
    dtypes = {"cpu": ("float32", "bfloat16"), "cuda": FLOATS}

    def compiled(self, model):
        """What is called: the module itself here; subclasses wrap it."""
        return model

    def prepare(self, model, example, threads, workdir):
        # `threads` needs no handling here: the caller pins torch's intra-op pool for the run.
        model.to(device=example.device, dtype=example.dtype)
        fn = self.compiled(model)

        def run():
            with torch.inference_mode():
                return fn(example)

        run()  # anything done on the first call (compiling, lazy initialisation) happens in setup time
        return run
