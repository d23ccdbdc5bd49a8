"""The search: ``python -m search``; workloads, the main job and its results."""
from .results import Results, load_results
from .config import load_config
from .workload import Workload, load_workload

__all__ = ["Results", "Workload", "load_config", "load_results", "load_workload"]
