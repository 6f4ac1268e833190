"""The sageLLM application: command line, experiment configs, runs and reports."""

from sagellm.experiment import Experiment, WorkloadSpec, load_experiment

__all__ = ["Experiment", "WorkloadSpec", "load_experiment"]
