"""Numbers for a subnet: accuracy, measured latency, a latency predictor, FLOPs and parameters."""
from .accuracy import correct_per_image, evaluate_accuracy, paired_gap
from .cost import Cost, count_cost
from .latency import (Latency, LatencyMeter, LatencySetting, measure_latency, measure_latency_interleaved,
                      resolve_device)
from .lut import LatencyTable

__all__ = ["Cost", "Latency", "LatencyMeter", "LatencySetting", "LatencyTable", "correct_per_image", "count_cost",
           "evaluate_accuracy", "measure_latency", "measure_latency_interleaved", "paired_gap", "resolve_device"]
