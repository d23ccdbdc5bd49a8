"""The "onnxruntime" runtime: the model exported to ONNX and run in an InferenceSession (CPU provider; the
CUDA provider on a GPU where onnxruntime-gpu is installed)."""

from __future__ import annotations

from supernet import ConfigError

from . import OnnxFileRuntime, register_runtime


@register_runtime
class OnnxRuntime(OnnxFileRuntime):
    name = "onnxruntime"
    summary = "the ONNX export in onnxruntime (CPU provider; CUDA provider with onnxruntime-gpu)"
    dtypes = {"cpu": ("float32",), "cuda": ("float32",)}
    package = "onnxruntime"
    install = "pip install onnxruntime (onnxruntime-gpu for --device cuda)"

    def check(self, device, dtype):
        super().check(device, dtype)
        import onnxruntime as ort
        if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError("onnxruntime here has no CUDA provider; pip install onnxruntime-gpu, or use "
                              "--runtime cudagraph")

    def load(self, path, example, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph, run sequentially: no inter-op pool
        # Threads spin within a run (as deployed) but stop at its end: an idle session's spinning workers
        # otherwise take cores from the model timed next (the base model read ~1.4x slower after a
        # subnet's block); alone, a call is as fast as with the default (benchmarks/ort_spinning.py).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if example.device.type == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": example.device.index or 0})]
        else:
            providers = ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), options, providers=providers)
        feed = {session.get_inputs()[0].name: example.cpu().numpy()}
        return lambda: session.run(None, feed)
