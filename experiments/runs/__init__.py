"""Scripted sweeps: TOML configs of models x tasks x k x seeds x analyses, run resumably into a
results store (Parquet + safetensors, queried with DuckDB), locally or on Ray.

    from experiments.runs import load_config, run_sweep, ResultsStore
    cfg = load_config("configs/example.toml")
    report = run_sweep(cfg, "results/example", executor="local", workers=2)
    ResultsStore("results/example").frame(analysis="head_scan")
"""

from experiments.runs.config import (
           SweepConfig,
           SweepConfigError,
           Unit,
           load_config,
           loads_config,
)
from experiments.runs.executors import SweepReport, run_sweep
from experiments.runs.store import ResultsStore, StoreError

__all__ = ["ResultsStore", "StoreError", "SweepConfig", "SweepConfigError", "SweepReport", "Unit",
           "load_config", "loads_config", "run_sweep"]
