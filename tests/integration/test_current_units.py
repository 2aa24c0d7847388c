"""One truth per cell: every reader of a store shows the current unit of each cell only
(``experiments.runs.cells``), ``--all-runs`` shows the rest, ``prune`` moves them aside."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.runs.cells import prompt_format, select, unit_size
from tests.helpers import store_with_superseded


def _u(key, n, state="done", at="2026", **params):
    return {"key": key, "state": state, "reason": "code changed" if state == "stale" else "", "computed_at": at,
            "unit": {"analysis": "circuit", "model": "m", "task": "t", "k": 4, "seed": 0,
                     "params": {"n_prompts": n, **params}}}


def test_select_most_prompts_then_latest_then_running_code_first():
    sel = select([_u("a", 32, at="2026-02"), _u("b", 128, at="2026-01"), _u("c", 128, at="2025-12")])
    assert sel.current == ["b"] and set(sel.superseded) == {"a", "c"}
    assert "32 prompts" in sel.superseded["a"] and "b" in sel.superseded["a"]
    # a stale unit never beats one of the running code, even with more prompts
    sel = select([_u("old", 512, state="stale"), _u("new", 32)])
    assert sel.current == ["new"] and "stale" in sel.superseded["old"] and not sel.stale
    # a cell whose units are all stale still shows one, flagged
    sel = select([_u("old", 512, state="stale"), _u("older", 64, state="stale")])
    assert sel.current == ["old"] and sel.stale == {"old": "code changed"} and "stale" in sel.note()


def test_prompt_format_is_part_of_the_cell():
    sel = select([_u("bos", 32, prefix="bos"), _u("none", 32, prefix="none"), _u("dflt", 128)])
    assert sel.current == ["bos", "dflt", "none"] and not sel.superseded
    assert prompt_format({"prefix": "none", "n_prompts": 3}) == '{"prefix": "none"}'
    assert unit_size('{"n_tasks": 256, "n_prompts": 16}') == 256 and unit_size(None) == 0


def test_every_reader_shows_the_128_prompt_run(tmp_path, capsys):
    from experiments.cli.main import main
    from experiments.runs.findings import render
    from experiments.runs.power import pilot_comparisons
    from experiments.runs.report import build_report

    store, big, small = store_with_superseded(tmp_path / "store")
    df = store.frame()
    assert set(df["unit_key"]) == {big} and df["current"].all()
    assert small in df.attrs["iclwb.superseded"] and "32 prompts" in df.attrs["iclwb.superseded"][small]
    acc = df[(df["metric"] == "acc:unablated") & (df["prompt"] < 0)]["value"]
    assert acc.tolist() == [0.75]
    every = store.frame(runs="all")
    assert set(every["unit_key"]) == {big, small}
    assert every.groupby("unit_key")["current"].all().to_dict() == {big: True, small: False}
    # the DuckDB views
    assert store.sql("SELECT count(DISTINCT unit_key) AS n FROM current")["n"].iloc[0] == 1
    assert store.sql("SELECT count(DISTINCT unit_key) AS n FROM results")["n"].iloc[0] == 2
    # the report's (and so `sweep results --stats`') tables
    circ = build_report(store).tables
    tab = pd.concat([t for name, t in circ.items() if name.startswith("circuit")])
    assert set(tab["n"]) == {128}
    # iclwb power
    assert set(pilot_comparisons(store.frame())["n"]) == {128}
    # the findings page names the left-out unit and why
    page = render(store.root)
    assert f"`{small[:12]}`: 32 prompts; current unit {big}" in page
    # the CLI: results, --all-runs, --stats, --export with the current column
    assert main(["sweep", "results", "--store", str(store.root), "--metric", "acc:unablated", "--all-columns"]) == 0
    out, err = capsys.readouterr()
    assert big in out and small not in out and "1 superseded unit(s) left out" in err
    assert main(["sweep", "results", "--store", str(store.root), "--metric", "acc:unablated", "--all-runs",
                 "--limit", "500"]) == 0
    out, _ = capsys.readouterr()
    assert big in out and small in out
    assert main(["sweep", "results", "--store", str(store.root), "--stats", "--analysis", "circuit"]) == 0
    out, _ = capsys.readouterr()
    assert " 128 " in out and " 32 " not in out
    csv = tmp_path / "all.csv"
    assert main(["sweep", "results", "--store", str(store.root), "--all-runs", "--export", str(csv)]) == 0
    exported = pd.read_csv(csv)
    assert exported.groupby("unit_key")["current"].all().to_dict() == {big: True, small: False}
    assert main(["power", "--store", str(store.root)]) == 0
    out, _ = capsys.readouterr()
    assert "the pilot had 128-128" in out


def test_app_readers_show_the_current_unit(tmp_path):
    from iclwb_app import circuit_view, results_view

    store, big, _ = store_with_superseded(tmp_path / "store")
    df = results_view.load_results(store.root)
    assert set(df["unit_key"]) == {big}
    rows = circuit_view.circuit_rows(df)
    assert set(rows["n_prompts"]) == {128}


def test_prune_moves_superseded_units_aside(tmp_path, capsys):
    from experiments.cli.main import main

    store, big, small = store_with_superseded(tmp_path / "store")
    assert main(["sweep", "prune", "--store", str(store.root), "--dry-run"]) == 0
    assert "would move" in capsys.readouterr().out and store.unit_path(small).exists()
    assert main(["sweep", "prune", "--store", str(store.root)]) == 0
    assert not store.unit_path(small).exists() and store.unit_path(big).exists()
    moved = store.root / "superseded" / "units" / f"{small}.parquet"
    assert moved.exists()  # never deleted
    assert small in json.loads((store.root / "superseded" / "pruned.json").read_text())
    assert set(store.frame(runs="all")["unit_key"]) == {big}
    assert main(["sweep", "prune", "--store", str(store.root)]) == 0
    assert "no superseded units" in capsys.readouterr().out


def test_frame_refuses_an_unknown_runs_value(tmp_path):
    from experiments.runs.store import StoreError

    store, _, _ = store_with_superseded(tmp_path / "store")
    with pytest.raises(StoreError, match="runs='latest'"):
        store.frame(runs="latest")


def test_a_run_whose_mde_exceeds_0_3_says_the_n_it_needs_before_it_starts(tmp_path, capsys):
    """Guardrail: 8 prompts per circuit unit cannot detect less than a 0.72 accuracy difference;
    the sweep says so, with the n needed for 0.1, before any work (n = 128 says nothing)."""
    from experiments.cli.main import main
    from experiments.runs.config import Unit
    from experiments.runs.power import preflight
    from probes import stats

    lines = preflight([Unit("m", "classify", 4, s, "circuit", '{"n_prompts":8}') for s in (0, 1)])
    need = stats.n_paired(0.1, 0.2)
    assert len(lines) == 1 and "n=8 prompts" in lines[0] and f"detecting 0.1 needs n={need}" in lines[0]
    assert preflight([Unit("m", "classify", 4, 0, "circuit", '{"n_prompts":128}')]) == []
    # a stored pilot's discordance is used where there is one
    store, _, _ = store_with_superseded(tmp_path / "store")
    line = preflight([Unit("m", "classify", 4, 1, "circuit", '{"n_prompts":8}')], store.frame())[0]
    assert "stored pilot comparisons" in line
    cfg = tmp_path / "tiny.toml"
    cfg.write_text('name = "tiny"\nseeds = [0]\n[[grid]]\nmodels = ["induction-2l"]\ntasks = ["kv-recall"]\n'
                   'k = [2]\nanalyses = ["circuit"]\n[grid.params.circuit]\nn_prompts = 8\nsteps = ["ablation"]\n')
    assert main(["sweep", "run", str(cfg), "--store", str(tmp_path / "s2"), "--workers", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.index("iclwb: power: circuit induction-2l kv-recall: n=8 prompts") < err.index("sweep 'tiny'")


FULL = Path(__file__).resolve().parents[2] / "results" / "full"


@pytest.mark.slow
def test_the_readmes_duckdb_recipe_counts_one_run_per_cell():
    """The README's DuckDB block, as printed, on the shipped store: 128 per-prompt rows per circuit
    metric and cell (the two runs of each gemma cell gave 256 when pooled)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b.split("```", 1)[0] for b in text.split("```python\n")[1:] if ".connect()" in b)
    ns: dict = {}
    exec(block.replace('"results/full"', repr(str(FULL))).rstrip().replace("con.sql(", "df = con.sql(", 1), ns)  # noqa: S102
    df = ns["df"]
    acc = df[df["metric"] == "acc:xi_to_si"]
    assert len(acc) == 8 and set(acc["n"]) == {128}, acc


def _intervals_beside_inconclusive(page: str) -> list[str]:
    """Rows of a findings page whose effect interval excludes 0 beside "inconclusive" with no
    sentence saying why. In a verdict-table cell the verdict comes first and the effect follows it
    in the same cell ("inconclusive: e [lo, hi], q = ..."; older pages: "e [lo, hi], q=...:
    inconclusive"); in a section table the verdict cell is "inconclusive" and the effect is the
    last interval cell before it."""
    interval = re.compile(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]")
    bad = []
    for line in page.splitlines():
        cells = [c.strip() for c in line.split("|")]
        for i, cell in enumerate(cells):
            if "inconclusive" not in cell or "CI excludes 0" in cell:
                continue
            if cell.startswith("inconclusive:"):  # a verdict-table cell: the effect follows the verdict
                found = interval.findall(cell)[:1]
            elif ": inconclusive" in cell:  # a summary cell of older pages
                found = interval.findall(cell.split(": inconclusive")[0])
            else:  # a verdict column
                before = [interval.findall(c) for c in cells[:i]]
                found = next((f for f in reversed(before) if f), [])
            if found and (float(found[-1][1]) > 0 or float(found[-1][2]) < 0):
                bad.append(cell)
    return bad


def test_no_findings_row_excludes_0_beside_a_bare_inconclusive():
    """docs/findings.md (generated from results/full): every row whose interval excludes 0 but
    whose verdict is "inconclusive" carries the sentence that explains it; and the checker itself
    catches a bare one."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "findings.md").read_text()
    assert _intervals_beside_inconclusive(page) == []
    assert _intervals_beside_inconclusive("| x | s | 0.9 [0.8, 0.95] | inconclusive: -0.0469 [-0.0992, -0.00142], q = 0.0625 |")
    assert not _intervals_beside_inconclusive("| x | s | 0.9 [0.8, 0.95] | inconclusive: -0.0469 [-0.0992, 0.00142] |")
    assert not _intervals_beside_inconclusive("| x | inconclusive: -0.0547 [-0.129, -0.00114], n=128 (the CI excludes 0 "
                                              "before the BH correction ...) |")
    assert "## Verdicts" in page and page.index("## Verdicts") < page.index("\n|")  # the first table
    assert _intervals_beside_inconclusive("| x | 0.031 [0.008, 0.070], q=0.375: inconclusive |")
    assert not _intervals_beside_inconclusive("| x | 0.031 [-0.008, 0.070], q=0.375: inconclusive |")
    assert _intervals_beside_inconclusive("| m | 0.9 [0.8, 0.95] | -0.05 [-0.09, -0.01] | 0.2 | inconclusive |")
    assert not _intervals_beside_inconclusive("| m | 0.9 [0.8, 0.95] | -0.05 [-0.09, 0.01] | 0.2 | inconclusive |")


@pytest.mark.slow
def test_results_page_table_on_the_shipped_store_has_the_current_n():
    """The Results page's interval table for gemma3-270m fv:singular-plural acc:xi_to_si said
    n = 256 (two runs pooled) where the findings page says 128."""
    from iclwb_app import results_view

    df = results_view.load_results(FULL)
    view = results_view.filter_results(df, model=["gemma3-270m"], task=["fv:singular-plural"])
    tab = results_view.metric_ci_table(view, "acc:xi_to_si", ["model", "task"])
    assert tab["n"].tolist() == [128]
    assert "superseded runs of the same cells left out" in results_view.superseded_note(df)
