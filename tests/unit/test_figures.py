"""The report's numbers, tables and figures: three significant figures, LaTeX that round-trips,
forest plots whose points are the rows' effects, integer layer axes, one colour scale per score."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from experiments.runs.figures import FiguresError, forest, head_heatmap, layer_ticks, parse_formats, score_range, slug, wrap
from experiments.runs.tables import display_table, p_text, sig, to_latex, to_markdown


def test_three_significant_figures_and_p_below_0_001():
    assert [sig(x) for x in (0.0009995, 3.231e-27, -0.438, 0.0234375, 1.0, 0.0, -0.0, 12.345, 123456.0)] == \
        ["0.000999", "3.23e-27", "-0.438", "0.0234", "1.00", "0", "0", "12.3", "123456"]
    assert sig(float("nan")) == "" and sig(7) == "7"
    assert [p_text(p) for p in (3.231e-27, 0.0009995, 0.001, 0.0469, 1.0)] == ["< 0.001", "< 0.001", "0.00100",
                                                                               "0.0469", "1.00"]


def _comparisons() -> pd.DataFrame:
    return pd.DataFrame({"model": ["m", "m"], "ablation": ["xi_to_si", "yi_to_sq"], "n": [128.0, 128.0],
                         "acc_mean": [0.8515625, 0.5], "ci_low": [0.78, 0.41], "ci_high": [0.9, 0.59],
                         "effect": [-0.0234375, -0.38], "effect_ci_low": [-0.1099, -0.47],
                         "effect_ci_high": [0.0519, -0.29], "p_value": [0.76, 3.2e-27], "q_value": [0.762, 6.4e-27],
                         "verdict": ["inconclusive", "significant"]})


def test_display_table_merges_intervals_and_rounds():
    t = display_table(_comparisons())
    assert list(t.columns) == ["model", "ablation", "n", "accuracy [CI]", "effect [CI]", "p", "q", "verdict"]
    assert t.iloc[0].tolist() == ["m", "xi_to_si", "128", "0.852 [0.780, 0.900]", "-0.0234 [-0.110, 0.0519]",
                                  "0.760", "0.762", "inconclusive"]
    assert t.iloc[1]["p"] == "< 0.001" and t.iloc[1]["effect [CI]"] == "-0.380 [-0.470, -0.290]"


def test_latex_and_markdown_round_trip_the_numbers_at_3_significant_figures():
    raw = _comparisons()
    t = display_table(raw)
    tex = to_latex(t, "Knockouts: every comparison", "tab:k")
    assert tex.count(r"\\") == 1 + len(t) and r"\begin{tabular}{llllllll}" in tex and r"\label{tab:k}" in tex
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    cells = [[c.strip() for c in line.removesuffix(r"\\").split("&")] for line in body]
    numbers = [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", cells[0][4])]
    want = [raw.loc[0, c] for c in ("effect", "effect_ci_low", "effect_ci_high")]
    assert numbers == [float(f"{w:.3g}") for w in want]
    assert cells[1][5] == r"$<$ 0.001" and cells[1][1] == r"yi\_to\_sq"
    md = to_markdown(t).splitlines()
    assert md[0] == "| model | ablation | n | accuracy [CI] | effect [CI] | p | q | verdict |"
    assert md[3].split(" | ")[4] == "-0.380 [-0.470, -0.290]"


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "label": ["t: xi_to_si", "t: yi_to_sq", "t: xi_to_si", "t: yi_to_sq"], "model": ["a", "a", "b", "b"],
        "effect": [-0.02, -0.38, -0.23, 0.01], "ci_low": [-0.11, -0.47, -0.32, -0.04],
        "ci_high": [0.05, -0.29, -0.13, 0.06], "verdict": ["inconclusive", "significant", "significant",
                                                           "no effect detected (MDE = 0.060)"],
        "words": ["inconclusive", "significantly lower", "significantly lower", "no effect detected"],
        "detail": ["layers 0-6"] * 4})


def test_forest_points_and_bars_are_the_rows_effects_and_intervals():
    rows = _rows()
    fig = forest(rows, "Circuit knockouts: accuracy minus the random control's", "knockout - control")
    assert [t.name for t in fig.data] == ["a", "b"]
    for trace, (_, part) in zip(fig.data, rows.groupby("model", sort=False)):
        assert list(trace.x) == pytest.approx(list(part["effect"]))
        assert list(np.array(trace.x) + np.array(trace.error_x.array)) == pytest.approx(list(part["ci_high"]))
        assert list(np.array(trace.x) - np.array(trace.error_x.arrayminus)) == pytest.approx(list(part["ci_low"]))
        assert list(trace.marker.symbol) == ["circle" if v == "significant" else "circle-open" for v in part["verdict"]]
    # one row per label, the two models side by side on it, labels top to bottom in order
    assert list(fig.layout.yaxis.ticktext) == ["t: xi_to_si", "t: yi_to_sq"]
    assert fig.data[0].y[0] < 0 < fig.data[1].y[0] and round(fig.data[1].y[1]) == 1
    assert fig.layout.title.text == "Circuit knockouts: accuracy minus the random control's"
    assert "filled: significant" in fig.layout.title.subtitle.text


def test_heatmap_at_30_layers_has_integer_ticks_every_second_layer_and_ringed_heads():
    df = pd.DataFrame([{"layer": l, "head": h, "value": (l * 9 + h) / 300} for l in range(30) for h in range(9)])
    fig = head_heatmap(df, "m", "induction", *score_range(df["value"], "induction"), marked=[(17, 3), (18, 6)])
    ax = fig.layout.yaxis
    assert (ax.tickmode, ax.tick0, ax.dtick, ax.tickformat) == ("linear", 0, 2, "d")
    assert list(ax.range) == [29.5, -0.5]  # layer 0 on top, no tick beyond the last layer
    assert list(fig.data[0].y) == list(range(30)) and all(isinstance(v, int) for v in fig.data[0].y)
    assert (list(fig.data[1].y), list(fig.data[1].x)) == ([17, 18], [3, 6])
    assert layer_ticks(4)["dtick"] == 1 and layer_ticks(48)["dtick"] == 3
    # attention-mass scores share [0, 1]; other scores span 0 .. the largest value over every model
    assert score_range([0.2, 0.4], "induction") == (0.0, 1.0)
    assert score_range([-0.5, 3.0, 7.5], "copying") == (-0.5, 7.5)


def test_titles_wrap_instead_of_being_cut_and_names_become_file_names():
    title = "icl-classify / classify / k=4: accuracy under knockouts (layers 0-0) and their random controls"
    wrapped = wrap(title, 60)
    assert wrapped.replace("<br>", " ") == title and all(len(x) <= 60 for x in wrapped.split("<br>"))
    assert slug("circuit/m / classify / k=4/accuracy") == "circuit-m-classify-k4-accuracy"
    assert parse_formats("svg, PDF") == ["svg", "pdf"]
    with pytest.raises(FiguresError, match="unknown figure format"):
        parse_formats("svg,jpeg")
