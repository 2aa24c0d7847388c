"""``HookedModel``: the type of every model the workbench analyses.

A ``TransformerBridge`` (TransformerLens 4), or a TransformerLens ``HookedRootModule`` such as the
zoo's linear-regression models: anything with ``cfg``, hook points and ``model.hooks(...)``. It is
``Any`` to the type checker on purpose: ``torch.nn.Module.__getattr__`` types every attribute
(``cfg``, ``blocks``, ``hooks``) as ``Tensor | Module``, which no checker can see through, so a
``torch.nn.Module`` annotation would make every ``model.cfg.n_layers`` an error.
"""

from __future__ import annotations

from typing import Any, TypeAlias

HookedModel: TypeAlias = Any
