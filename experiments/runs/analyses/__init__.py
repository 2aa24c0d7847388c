"""The analyses a sweep unit can compute, all registered on import of this package.

An analysis is a function ``fn(model_name, task, k, seed, params) -> AnalysisResult``: a tidy
pandas table (one measurement per row, with at least the columns ``metric`` and ``value``; any
other columns are dimensions such as ``layer``, ``head``, ``step``, ``condition``) plus optional
tensor artefacts (attention maps, head-score tables) stored in safetensors beside the table.
The store adds the provenance columns; an analysis only measures.

Built in:

- ``head_scan``: every head score of ``experiments.studies.scan.head_scan`` (layer x head tables); no
  task or k. Each (score, layer, head) row carries its statistics (``experiments.studies.scan.scan_stats``:
  interval over prompts, null, p, q over the model's heads, verdict). Artefacts: each score
  table, its per-prompt values and its null's, and the attention maps of the scan's first prompt.
- ``circuit``: the summarize-merge-retrieve circuit with ablations (``circuits``), on a task at k.
- ``icl_vs_gd``: ICL against gradient descent on the same demonstrations
  (``experiments.studies.icl_vs_gd.compare_icl_gd``), on a task at k.
- ``dynamics``: a zoo model's training dynamics over its checkpoint series
  (``experiments.studies.dynamics.dynamics_table``); no task or k.
- ``vectors``: task / function / in-context vectors (``experiments.studies.vectors_study``), on a
  task at k.
- ``fv_heads``: FV heads vs induction heads (Yin & Steinhardt 2025): the top p% of heads by each
  score, with exclusion, mean-ablated at the read-out beside layer-matched random heads, on a
  held-out task at k (``circuits.head_ablation``).

One module per analysis (``head_scan.py``, ``circuit.py``, ...); what they share (the model cache,
the task hooks) is ``experiments.runs.inputs``.

Register more with ``register(AnalysisSpec(...))`` (``experiments.runs.registry``) in a module
named by a config's ``imports``. Models are loaded once per worker process
(``experiments.runs.inputs.get_model``), so a worker that runs many units of
one model loads it once.

Versions and stale units: see ``experiments.runs.registry`` (``AnalysisSpec.version``,
``code_hash``).
"""

from __future__ import annotations

from experiments.runs.analyses import circuit, dynamics, fv_heads, head_scan, icl_vs_gd, vectors
from experiments.runs.registry import REGISTRY, AnalysisSpec

BUILTIN_MODULES = (head_scan, dynamics, circuit, icl_vs_gd, vectors, fv_heads)
"""The modules of the built-in analyses (each registers its analysis when imported)."""


def analysis_names() -> list[str]:
    return sorted(REGISTRY)


def get_analysis(name: str) -> AnalysisSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown analysis {name!r}; allowed: {', '.join(analysis_names())}")
    return REGISTRY[name]
