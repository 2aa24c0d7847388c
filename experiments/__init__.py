"""Studies: ICL tasks, the model zoo, model loading, ICL vs GD, sweeps, the results store and the CLI."""

from experiments.models.loading import ModelLoadError, load_model

__all__ = ["ModelLoadError", "load_model"]
