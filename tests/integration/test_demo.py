"""``iclwb demo --quick``: the report, its figures and summary, and the summary's numbers against the store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.runs import ResultsStore
from experiments.runs.report_page import Finding

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
    from experiments.runs.demo import run_demo

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
    # the training-dynamics units have a section and numbers (their steps were read as text once)
    assert "[training dynamics]" in summary and "undefined" not in summary
    assert "When do the ICL heads form during training?" in html
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
    top = {f.filters["metric"]: f.text for f in findings
           if f.filters.get("model") == "induction-2l" and f.filters.get("analysis") == "head_scan"}
    assert re.search(r"head L1H\d", top["induction"]) and re.search(r"head L0H\d", top["previous_token"])


@pytest.mark.slow
def test_second_run_reuses_store(quick_demo, capsys):
    from experiments.runs.demo import run_demo

    rc, out = quick_demo
    before = {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.parquet")}
    assert run_demo(quick=True, out_dir=str(out), progress=False) == 0
    text = capsys.readouterr().out
    assert " 0 computed" in text and "iclwb app --results" in text
    assert {p.name: p.stat().st_mtime_ns for p in (out / "units").glob("*.parquet")} == before


def test_shipped_demo_config_is_the_demo():
    from experiments.runs.demo import DEMO_CONFIG, QUICK_CONFIG

    assert (REPO / "configs" / "demo.toml").read_text() == DEMO_CONFIG
    assert (REPO / "configs" / "demo-quick.toml").read_text() == QUICK_CONFIG


def _hand_made_store(tmp_path):
    import numpy as np
    import pandas as pd

    from experiments.runs.config import Unit

    store = ResultsStore(tmp_path / "res")
    prov = {"model_hash": "x", "sweep": "t", "config_hash": "c", "git_commit": "g", "versions": "{}",
            "host": "h", "run_id": "r", "computed_at": "now", "wall_time_s": 1.0, "cpu_time_s": 1.0}
    for seed, bump in ((0, 0.0), (1, 0.1)):
        rows = []
        for l in range(2):
            for h in range(3):
                top = (l, h) == (1, 2)
                v = (0.7 + bump) if top else 0.1
                rows.append({"metric": "induction", "layer": l, "head": h, "value": v, "prompt": -1, "n": 32,
                             "ci_low": v - 0.05, "ci_high": v + 0.05, "null": "no-repeat", "null_value": 0.1,
                             "effect": v - 0.1, "effect_ci_low": v - 0.16, "effect_ci_high": v - 0.04,
                             "p_value": 1e-4 if top else 0.6, "mde": float("nan"), "test": "permutation"})
        store.write_unit(Unit("m", "", 0, seed, "head_scan"), pd.DataFrame(rows), prov)
    # 100 prompts; outcomes built so that knocking out yi_to_sq costs 38 points against its control
    # (a real effect) and si_to_yi one point (none)
    n = 100
    ok = lambda m: np.r_[np.ones(m), np.zeros(n - m)]  # noqa: E731
    outcomes = {"unablated": ok(90), "zero_shot": ok(50), "yi_to_sq": ok(50), "yi_to_sq:random": ok(88),
                "si_to_yi": ok(85), "si_to_yi:random": ok(86)}
    rows = []
    for m, v in outcomes.items():
        rows.append({"step": "ablation", "layer": -1, "head": -1, "metric": f"acc:{m}", "value": v.mean(),
                     "prompt": -1, "sd": float("nan"), "window": "0-1", "n_prompts": n})
        rows += [{"step": "ablation", "layer": -1, "head": -1, "metric": f"acc:{m}", "value": float(x),
                  "prompt": i, "sd": float("nan"), "window": "0-1", "n_prompts": n} for i, x in enumerate(v)]
    store.write_unit(Unit("m", "classify", 4, 0, "circuit"), pd.DataFrame(rows), prov)
    rng = np.random.default_rng(0)
    for k in (2, 8):
        rows = []
        for i in range(64):
            e_model = 1.0 / k + 0.01 * rng.standard_normal()
            rows += [{"metric": "err_model", "value": e_model, "prompt": i},
                     {"metric": "err_gd1", "value": e_model + 0.5, "prompt": i},
                     {"metric": "err_least_squares", "value": e_model - 0.1, "prompt": i}]
        store.write_unit(Unit("lr", "linreg", k, 0, "icl_vs_gd"), pd.DataFrame(rows), prov)
    return store


def test_report_findings_on_hand_made_store(tmp_path):
    """Known answers: the report quotes the head, knockout and k that the rows were built with,
    with the verdict the numbers imply."""
    from experiments.runs.report import build_report

    store = _hand_made_store(tmp_path)
    rep = build_report(store)
    texts = "\n".join(f.text for f in rep.findings)
    assert "m: top induction head L1H2 = 0.750" in texts and "1 of 6 heads above their null" in texts
    by = {f.filters.get("metric"): f for f in rep.findings if f.section == "circuit"}
    assert by["acc:yi_to_sq"].verdict == "significant" and "accuracy 0.500 vs 0.880" in by["acc:yi_to_sq"].text
    assert by["acc:si_to_yi"].verdict != "significant"
    # every non-significant paired accuracy comparison shows the MDE at the run's n (1 of 100 prompts
    # discordant: MDE 0.07-0.09 by Connor's formula)
    mde = float(re.search(r"MDE[^=]*= (\d\.\d+)", by["acc:si_to_yi"].text).group(1))
    assert 0.07 < mde < 0.09, by["acc:si_to_yi"].text
    from experiments.runs.report_page import cmp_text

    row = dict(verdict="inconclusive", effect=-0.05, effect_ci_low=-0.12, effect_ci_high=0.02, q_value=0.2,
               n=100, mde=0.081)
    assert cmp_text(row).endswith("n=100, MDE at this n = 0.081")
    assert "MDE" not in cmp_text({**row, "verdict": "significant", "q_value": 0.01})
    assert by["acc:unablated"].verdict == "significant" and "0.900" in by["acc:unablated"].text
    ivg = [f for f in rep.findings if f.section == "ICL vs GD"]
    assert any("err_model" in f.text and "err_gd1" in f.text and f.verdict == "significant" for f in ivg)
    # every finding states its interval and verdict; no bare "largest effect"
    for f in rep.findings:
        assert re.search(r"\[-?\d", f.text), f.text
        assert "largest" not in f.text
    df = store.frame()
    assert all(f.recompute(df) == pytest.approx(f.value) for f in rep.findings if f.agg != "stats")
    assert {"head scan/m/induction", "circuit/forest: knockout", "circuit/forest: ICL gain"} <= set(rep.figures)
    # the knockout figure plots effects (knockout - control) with their intervals, significant ones filled
    forest = rep.figures["circuit/forest: knockout"].data[0]
    effects = rep.effects[rep.effects["unit"] == "knockout"]
    assert list(forest.x) == pytest.approx([-0.01, -0.38]) and list(effects["label"]) == ["classify: si_to_yi",
                                                                                       "classify: yi_to_sq"]
    assert list(forest.error_x.array) == pytest.approx(list(effects["ci_high"] - effects["effect"]))
    assert list(forest.error_x.arrayminus) == pytest.approx(list(effects["effect"] - effects["ci_low"]))
    assert list(forest.marker.symbol) == ["circle-open", "circle"]
    # the accuracies themselves (knockout beside its control) are folded away with the per-run figures
    assert list(rep.appendix["circuit/m / classify / k=4/accuracy"].data[1].y) == pytest.approx([0.86, 0.88])
    # heatmaps of attention mass share one colour scale [0, 1]; the head above its null is ringed
    hm = rep.figures["head scan/m/induction"]
    assert (hm.data[0].zmin, hm.data[0].zmax) == (0.0, 1.0)
    assert (list(hm.data[1].y), list(hm.data[1].x)) == ([1], [2])
    html = rep.write(tmp_path / "report.html").read_text()
    # the page opens with the verdict table, then the questions' figures; provenance last
    assert html.index("id='verdict-table'") < html.index("class='fig'") < html.index("id='provenance'")
    assert html.index("<table") == html.index("<table id='verdict-table'")
    assert "significantly lower: -0.380 [" in html and "knockout yi_to_sq minus random control" in html


def test_power_from_a_stored_pilot(tmp_path, capsys):
    """`iclwb power` on the hand-made pilot: the n needed for a 0.05 drop follows from each stored
    comparison's discordance (known by construction) through McNemar's sample-size formula."""
    from experiments.cli.main import main
    from probes import stats

    _hand_made_store(tmp_path)
    assert main(["power", "--store", str(tmp_path / "res"), "--effect", "0.05"]) == 0
    out = capsys.readouterr().out
    # yi_to_sq vs its control: 38 of 100 prompts discordant; unablated vs zero-shot: 40
    need = {stats.n_paired(0.05, 0.38), stats.n_paired(0.05, 0.40), stats.n_paired(0.05, 0.05)}
    assert f"n_needed_max: {max(need)}" in out
    assert "yi_to_sq vs yi_to_sq:random" in out
    assert main(["power", "--store", str(tmp_path / "res"), "--model", "nobody"]) == 1
    with pytest.raises(SystemExit):
        main(["power", "--store", str(tmp_path / "res"), "--effect", "5"])


def test_sweep_results_stats_on_hand_made_store(tmp_path, capsys):
    """`iclwb sweep results --stats` prints each run's statistics with CIs, q and verdicts, and
    exports them: the knockout yi_to_sq (50 vs 88 of 100) is significant with its interval."""
    import pandas as pd

    from experiments.cli.main import main

    store = _hand_made_store(tmp_path)
    assert main(["sweep", "results", "--store", str(store.root), "--stats"]) == 0
    out = capsys.readouterr().out
    assert "== circuit/m / classify / k=4 ==" in out and "ci_low" in out and "q_value" in out
    path = tmp_path / "stats.csv"
    assert main(["sweep", "results", "--store", str(store.root), "--stats", "--export", str(path)]) == 0
    tab = pd.read_csv(path)
    y = tab[(tab.table == "circuit/m / classify / k=4") & (tab.ablation == "yi_to_sq")].iloc[0]
    assert (y.n, y.acc_mean, y.random_mean, y.verdict) == (100, 0.5, 0.88, "significant")
    assert y.effect == pytest.approx(-0.38) and y.effect_ci_low < -0.38 < y.effect_ci_high < 0
    assert {"ci_low", "ci_high", "effect_ci_low", "effect_ci_high", "p_value", "q_value"} <= set(tab.columns)
