"""One truth per cell: every reader of a store shows the current unit of each cell only
(``experiments.runs.cells``), ``--all-runs`` shows the rest, ``prune`` moves them aside."""

from __future__ import annotations

import json

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
