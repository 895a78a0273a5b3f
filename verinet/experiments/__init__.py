"""The comparison job: configs, the per-problem loop with resumable results, the report."""

from verinet.experiments.config import CompareConfig, ConfigError, TaskSpec, load_config
from verinet.experiments.compare import run_compare

__all__ = ["CompareConfig", "ConfigError", "TaskSpec", "load_config", "run_compare"]
