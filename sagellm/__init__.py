"""The sageLLM application: command line, experiment configs, runs and reports."""

from sagellm.compare import (
    Grid,
    WorkloadChoice,
    builtin_cluster,
    load_records,
    load_summaries,
    load_sweep,
    run_grid,
    write_report,
)
from sagellm.experiment import Experiment, WorkloadSpec, load_experiment

__all__ = ["Experiment", "Grid", "WorkloadChoice", "WorkloadSpec", "builtin_cluster",
           "load_experiment", "load_records", "load_summaries", "load_sweep", "run_grid",
           "write_report"]
