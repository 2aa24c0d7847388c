"""A cheap, deterministic analysis for the sweep-infrastructure tests (imported by their configs
through ``imports = ["tests.unit.test_sweep_helpers"]``), and the checks of that analysis itself.

``checksum``: a value derived from the model's checkpoint bytes and the seed (so a stored row can
be recomputed and compared), after sleeping ``sleep`` seconds to give a test time to kill a run.
"""

from __future__ import annotations

import hashlib
import os
import time

import pandas as pd
import torch

from experiments.runs.registry import AnalysisResult, AnalysisSpec, register


def expected_value(model: str, seed: int, i: int) -> float:
    from experiments.runs.modelinfo import model_hash

    h = hashlib.sha256(f"{model_hash(model)}:{seed}:{i}".encode()).hexdigest()
    return int(h[:8], 16) / 0xFFFFFFFF


def _checksum(model: str, task: str, k: int, seed: int, params: dict) -> AnalysisResult:
    time.sleep(params["sleep"])
    rows = [{"metric": "checksum", "i": i, "value": expected_value(model, seed, i), "pid": os.getpid()}
            for i in range(params["n"])]
    g = torch.Generator().manual_seed(seed)
    return AnalysisResult(pd.DataFrame(rows), {"noise": torch.randn(3, 4, generator=g)})


register(AnalysisSpec(name="checksum", fn=_checksum, params={"sleep": 0.0, "n": 3},
                      uses_task=False, uses_k=False,
                      description="test analysis: hash of checkpoint and seed"))


def test_checksum_is_deterministic_and_seed_dependent():
    a = _checksum("induction-2l", "", 0, 1, {"sleep": 0.0, "n": 2}).table
    b = _checksum("induction-2l", "", 0, 1, {"sleep": 0.0, "n": 2}).table
    c = _checksum("induction-2l", "", 0, 2, {"sleep": 0.0, "n": 2}).table
    assert a["value"].tolist() == b["value"].tolist()
    assert a["value"].tolist() != c["value"].tolist()
    assert all(0.0 <= v <= 1.0 for v in a["value"])
