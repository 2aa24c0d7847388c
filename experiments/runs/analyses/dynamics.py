"""The ``dynamics`` analysis: a zoo model's training dynamics over its checkpoint series."""

from __future__ import annotations

from typing import Any

import torch

from experiments.models import zoo
from experiments.models.zoo import series
from experiments.runs.registry import AnalysisResult, AnalysisSpec, register
from experiments.studies.dynamics import dynamics_table


def _dynamics(model_name: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
    df = dynamics_table(model_name, steps=params["steps"] or None, seed=seed,
                        n_prompts=params["n_prompts"])
    tensors = {}
    heads = df[df["layer"] >= 0]
    for (step, metric), t in heads.groupby(["step", "metric"]):
        grid = torch.full((int(t["layer"].max()) + 1, int(t["head"].max()) + 1), float("nan"))
        grid[torch.tensor(t["layer"].tolist()), torch.tensor(t["head"].tolist())] = torch.tensor(
            t["value"].tolist(), dtype=torch.float32)
        tensors[f"{step}/{metric}"] = grid
    # the store's own ``k`` column is the unit's k: the accuracy's number of shots is ``shots``
    return AnalysisResult(df.rename(columns={"k": "shots"}).reset_index(drop=True), tensors)


def _has_series(model: str, task: str) -> str | None:
    if model not in zoo.ZOO_MODULES:
        return f"{model!r} is not a zoo model; dynamics needs a zoo checkpoint series"
    if not series.has_series(model):
        return f"zoo model {model!r} has no checkpoint series; run `iclwb zoo train {model} --checkpoints 12`"
    return None


register(AnalysisSpec(
    name="dynamics", fn=_dynamics,
    params={"steps": [], "n_prompts": 64},
    uses_task=False, uses_k=False,
    description="per checkpoint of a zoo model: losses, ICL score, every head score, accuracy vs k "
                "(experiments.studies.dynamics)",
    requires=("experiments.studies.dynamics",),
    code=("experiments.runs.analyses.dynamics", "experiments.runs.inputs"),
    applies=_has_series,
))
