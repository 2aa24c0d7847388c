"""``iclwb demo --quick``: the report, its figures and summary, and the summary's numbers against the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.report import Finding
from experiments.sweep import ResultsStore

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from experiments.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "results"
    rc = run_demo(quick=True, out_dir=str(out), progress=False)
    return rc, out


@pytest.mark.slow
def test_quick_demo_writes_report_with_figures_and_summary(quick_demo, capsys):
    rc, out = quick_demo
    assert rc == 0
    html = (out / "report.html").read_text()
    # plotly.js inlined exactly once, no CDN: the report works offline
    from plotly.offline import get_plotlyjs

    assert html.count(get_plotlyjs()[:2000]) == 1
    assert not re.search(r"<script[^>]*\bsrc=", html), "no external scripts"
    findings = json.loads((out / "findings.json").read_text())
    n_figs = html.count("class='fig'")
    assert n_figs >= 2 and len(findings) >= 2
    assert html.count("Plotly.newPlot") == n_figs
    summary = (out / "summary.txt").read_text()
    lines = summary.splitlines()
    assert max(map(len, lines)) <= 100 and len(lines) <= 50, "one screen"
    assert "head scan" in summary and "induction-2l" in summary
    assert summary.strip() in html.replace("&#x27;", "'").replace("&gt;", ">").replace("&lt;", "<") \
        .replace("&quot;", '"').replace("&amp;", "&")


@pytest.mark.slow
def test_summary_numbers_equal_the_store(quick_demo):
    _, out = quick_demo
    df = ResultsStore(out, create=False).frame()
    findings = [Finding(**f) for f in json.loads((out / "findings.json").read_text())]
    summary = (out / "summary.txt").read_text()
    for f in findings:
        # the finding's number is an aggregate of the stored rows it names ...
        assert f.recompute(df) == pytest.approx(f.value, abs=1e-9), f.text
        # ... and the sentence in the summary quotes it
        assert " ".join(f"- {f.text}".split()) in " ".join(summary.split())
        quoted = [float(x) for x in re.findall(r"-?\d+\.\d{3}(?:e[-+]\d+)?", f.text)]
        assert any(q == pytest.approx(f.value, rel=5e-3, abs=5e-4) for q in quoted), f.text
    # the head scan's known answer on induction-2l: previous-token head in layer 0, induction in layer 1
    top = {f.filters["metric"]: f.text for f in findings if f.filters.get("model") == "induction-2l"}
    assert re.search(r"head L1H\d", top["induction"]) and re.search(r"head L0H\d", top["previous_token"])


@pytest.mark.slow
def test_second_run_reuses_store(quick_demo, capsys):
    from experiments.demo import run_demo

    rc, out = quick_demo
    before = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.parquet")}
    assert run_demo(quick=True, out_dir=str(out), progress=False) == 0
    text = capsys.readouterr().out
    assert " 0 computed" in text and "iclwb app --results" in text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.parquet")} == before


def test_shipped_demo_config_is_the_demo():
    from experiments.demo import DEMO_CONFIG, QUICK_CONFIG

    assert (REPO / "configs" / "demo.toml").read_text() == DEMO_CONFIG
    assert (REPO / "configs" / "demo-quick.toml").read_text() == QUICK_CONFIG


def test_report_findings_on_hand_made_store(tmp_path):
    """Known answers: the report quotes the head, knockout and k that the rows were built with."""
    import pandas as pd

    from experiments.report import build_report
    from experiments.sweep.config import Unit

    store = ResultsStore(tmp_path / "res")
    prov = {"model_hash": "x", "sweep": "t", "config_hash": "c", "git_commit": "g", "versions": "{}",
            "host": "h", "run_id": "r", "computed_at": "now", "wall_time_s": 1.0, "cpu_time_s": 1.0}
    for seed, bump in ((0, 0.0), (1, 0.1)):
        rows = [{"metric": "induction", "layer": l, "head": h, "value": (0.7 + bump) if (l, h) == (1, 2) else 0.1}
                for l in range(2) for h in range(3)]
        store.write_unit(Unit("m", "", 0, seed, "head_scan"), pd.DataFrame(rows), prov)
    accs = {"unablated": 0.9, "zero_shot": 0.5, "yi_to_sq": 0.5, "yi_to_sq:random": 0.88,
            "si_to_yi": 0.85, "si_to_yi:random": 0.86}
    circ = pd.DataFrame([{"step": "ablation", "layer": -1, "head": -1, "metric": f"acc:{m}", "value": v,
                          "window": "0-1", "n_prompts": 8} for m, v in accs.items()])
    store.write_unit(Unit("m", "classify", 4, 0, "circuit"), circ, prov)
    for k, diff in ((2, 0.5), (8, 0.125)):
        t = pd.DataFrame([{"metric": "preds_diff", "value": diff}, {"metric": "sens_cos", "value": 0.99},
                          {"metric": "err_model", "value": 1.0 / k}])
        store.write_unit(Unit("lr", "linreg", k, 0, "icl_vs_gd"), t, prov)
    rep = build_report(store)
    by = {f.text: f for f in rep.findings}
    texts = "\n".join(by)
    assert "m: top induction head L1H2 = 0.750 (mean of 2 seeds)" in texts
    assert "largest knockout effect: yi_to_sq (layers 0-1): accuracy 0.500 vs 0.880" in texts
    assert "accuracy 0.900 with demonstrations, 0.500 zero-shot" in texts
    assert "lr: mean |y_model - y_GD| at k=8: 0.125" in texts
    df = store.frame()
    assert all(f.recompute(df) == pytest.approx(f.value) for f in rep.findings)
    assert {"head_scan/m/induction", "circuit/m / classify / k=4/ablations", "icl_vs_gd/lr/errors"} <= set(rep.figures)
    bars = rep.figures["circuit/m / classify / k=4/ablations"].data
    assert list(bars[0].x) == ["unablated", "zero_shot", "si_to_yi", "yi_to_sq"]
    assert list(bars[1].y)[2:] == [0.86, 0.88]
