"""The search: ``python -m search``; workloads, the main job and its results."""
from .workload import Workload, load_config, load_workload

__all__ = ["Workload", "load_config", "load_workload"]
