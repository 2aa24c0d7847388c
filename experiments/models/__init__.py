"""Models: ``load_model`` (zoo names, pretrained aliases, HF folders, hub names), the offline
pretrained loaders (``pretrained``), Hugging Face checkpoints (``hf``) and the zoo the project
trains itself (``zoo``)."""

from experiments.models.hf import ModelLoadError
from experiments.models.loading import (
    PRETRAINED_ALIASES,
    builtin_names,
    load_model,
    n_ctx_of,
)

__all__ = ["PRETRAINED_ALIASES", "ModelLoadError", "builtin_names", "load_model", "n_ctx_of"]
