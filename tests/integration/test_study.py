"""``iclwb study full``: the expected run time first, a resumable sweep, the findings page."""

from __future__ import annotations

import io

import pytest

from experiments.runs import study
from experiments.runs.config import load_config, loads_config

MINI = """
name = "mini"
seeds = [0]
[[grid]]
models = ["induction-2l"]
analyses = ["head_scan"]
[grid.params.head_scan]
save_attention = false
induction_prompts = 8
[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [4]
analyses = ["circuit", "vectors"]
[grid.params.circuit]
n_prompts = 16
[grid.params.vectors]
n_prompts = 16
n_dev = 8
layers = [0, 1]
n_aie_prompts = 4
[[grid]]
models = ["icl-classify"]
tasks = ["classify"]
k = [2]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_prompts = 4
epochs = 1
lr_grid = [0.001, 0.01]
lr_search_prompts = 2
order_perms = 2
"""


def test_full_config_meets_the_issue_sizes():
    cfg = load_config(study.FULL_CONFIG)
    units = cfg.units()
    by = {}
    for u in units:
        by.setdefault(u.analysis, []).append(u)
    assert {u.model for u in units} == {"smollm2-135m", "gemma3-270m"}
    assert len({u.task for u in by["circuit"]}) >= 4
    assert all(u.params["n_prompts"] >= 128 and u.k == 4 for u in by["circuit"])
    assert {u.k for u in by["icl_vs_gd"]} == {1, 2, 4, 8}
    assert all(u.params["n_prompts"] >= 32 and len(u.params["lr_grid"]) > 1 for u in by["icl_vs_gd"])
    assert len({u.task for u in by["vectors"]}) >= 6 and all(u.params["n_prompts"] >= 128 for u in by["vectors"])
    from experiments.tasks import suite

    assert all(suite.kind_of(u.task) == "abstractive" for u in by["vectors"])


def test_estimate_counts_only_missing_units(tmp_path):
    cfg = loads_config(MINI)
    units = cfg.units()
    full = study.estimate(units)
    assert full.pending == len(units) == 4 and full.seconds > 0

    class Half:  # a store holding the last two units, current
        def classify(self, us, expect):
            return {u.key: ("missing", "") if i < 2 else ("done", "") for i, u in enumerate(us)}
    half = study.estimate(units, Half())
    assert half.pending == 2 and half.seconds < full.seconds
    assert "expected run time" in half.text()
    two = study.estimate(units, Half(), workers=2)  # two workers share the units' time
    load = two.seconds - sum(two.per_analysis.values()) / 2
    assert two.per_analysis == half.per_analysis and load > 0
    assert half.seconds - load == pytest.approx(sum(half.per_analysis.values()))
    assert study.estimate(units, Half(), workers=8).seconds == two.seconds  # at most one per unit


@pytest.mark.slow
def test_study_runs_resumes_and_writes_findings(tmp_path, monkeypatch):
    cfg_path = tmp_path / "mini.toml"
    cfg_path.write_text(MINI)
    out, page = io.StringIO(), tmp_path / "findings.md"
    assert study.run_full(cfg_path, tmp_path / "store", findings=page, progress=False, out=out) == 0
    text = out.getvalue()
    assert text.index("expected run time") < text.index("4 computed")
    md = page.read_text()
    for part in ("## Verdicts", "## Provenance", "iclwb study findings --store",
                 "## 1. Induction heads", "yi_to_sq", "## 3. ICL vs gradient descent", "function_vector"):
        assert part in md
    assert "significant" in md  # induction-2l's induction heads against their null
    # the report's figures beside the page, linked from it (the vectors section included)
    svgs = sorted(p.name for p in (tmp_path / "findings-figures").glob("*.svg"))
    assert "circuit-forest-knockout.svg" in svgs and any(n.startswith("ICL-vectors") for n in svgs)
    assert all(f"(findings-figures/{n})" in md for n in svgs)
    again = io.StringIO()
    assert study.run_full(cfg_path, tmp_path / "store", findings=None, progress=False, out=again) == 0
    assert "0 of 4 units to compute" in again.getvalue() and "4 already stored" in again.getvalue()
    # a new version of one analysis makes its stored units stale: the estimate counts them again
    import dataclasses

    from experiments.runs import registry
    from experiments.runs.store import ResultsStore

    units = load_config(cfg_path).units()
    name = units[0].analysis
    spec = registry.REGISTRY[name]
    monkeypatch.setitem(registry.REGISTRY, name, dataclasses.replace(spec, version=f"{spec.version}-new"))
    est = study.estimate(units, ResultsStore(tmp_path / "store"))
    assert est.pending == sum(u.analysis == name for u in units) >= 1
