"""Checkpoint series and training dynamics: known answers.

- a model reloaded from checkpoint i reproduces the loss logged at step i (a fresh tiny run, and
  the shipped induction-2l series);
- the dynamics table at the final checkpoint equals the head scan of the shipped model;
- the phase-change detector finds the step of a synthetic step function within one checkpoint;
- the loss-bump measure recovers a bump of known height.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.models.loading import zoo
from experiments.models.zoo import series, training
from experiments.studies import dynamics as D


# ------------------------------------------------------------------------------- series format
def test_log_steps_are_distinct_increasing_and_log_spaced():
    steps = series.log_steps(6000, 12)
    assert len(steps) == 12 and steps[0] == 1 and steps[-1] == 6000
    assert all(b > a for a, b in zip(steps, steps[1:]))
    ratios = np.diff(np.log(steps[4:]))  # past the integer-rounding region: equal log gaps
    assert np.allclose(ratios, math.log(6000) / 11, atol=0.02)
    small = series.log_steps(10, 8)  # crowded: still distinct
    assert len(set(small)) == 8 and small[-1] == 10
    with pytest.raises(ValueError, match="lower --checkpoints"):
        series.log_steps(5, 8)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    card = training.train_and_save("icl-transience", steps=24, progress=False, root=root, checkpoints=5)
    return root, card


def test_reloaded_checkpoints_reproduce_their_logged_loss(tiny_run):
    from experiments.models.zoo import transience

    root, card = tiny_run
    index = series.read_index("icl-transience", root)
    assert index["seed"] == card["seed"] == 0 and index["total_steps"] == 24
    assert [c["step"] for c in index["checkpoints"]] == series.log_steps(24, 5)
    assert card["checkpoint_series"]["steps"] == series.log_steps(24, 5)
    assert len(index["train_loss_log"]) == 24
    losses = []
    for c in index["checkpoints"]:
        model = series.load_series_model("icl-transience", c["step"], root)
        assert transience.probe_loss(model) == pytest.approx(c["loss"], abs=1e-6)
        losses.append(c["loss"])
    assert losses[-1] < losses[0] - 0.5  # the checkpoints really differ: training happened
    final = (root / "icl-transience" / "model.safetensors").read_bytes()
    last = root / "icl-transience" / "series" / index["checkpoints"][-1]["file"]
    assert last.read_bytes() == final  # the last checkpoint is the final model


def test_a_series_that_does_not_match_its_model_is_refused(tiny_run, tmp_path):
    import shutil

    root, _ = tiny_run
    copy = tmp_path / "icl-transience"
    shutil.copytree(root / "icl-transience", copy)
    idx = json.loads((copy / "series" / "index.json").read_text())
    first = copy / "series" / idx["checkpoints"][0]["file"]
    shutil.copy(first, copy / "model.safetensors")  # the model is now another run's weights
    with pytest.raises(FileNotFoundError, match="another training run"):
        series.read_index("icl-transience", tmp_path)
    idx["complete"] = False
    (copy / "series" / "index.json").write_text(json.dumps(idx))
    with pytest.raises(FileNotFoundError, match="incomplete"):
        series.read_index("icl-transience", tmp_path)
    with pytest.raises(FileNotFoundError, match="--checkpoints"):
        series.read_index("icl-transience", tmp_path / "nowhere")


def test_checkpoints_are_refused_for_a_trainer_without_a_recorder(tmp_path):
    with pytest.raises(ValueError, match="without --checkpoints"):
        training.train_and_save("linreg-lsa-1l", steps=2, progress=False, root=tmp_path, checkpoints=3)


# ------------------------------------------------------------------------------- shipped series
@pytest.mark.parametrize("name", ["induction-2l", "icl-classify", "icll-dfa"])
def test_shipped_series_reproduce_their_logged_losses(name):
    import importlib

    index = series.read_index(name)
    module = importlib.import_module(zoo.ZOO_MODULES[name])
    assert len(index["checkpoints"]) >= 10 and index["checkpoints"][-1]["step"] == index["total_steps"]
    for c in (index["checkpoints"][2], index["checkpoints"][-1]):
        model = series.load_series_model(name, c["step"])
        assert module.probe_loss(model) == pytest.approx(c["loss"], abs=1e-5)


def test_dynamics_at_the_final_checkpoint_equals_the_head_scan_of_the_shipped_model():
    from experiments.models.loading import load_model
    from experiments.studies.scan import head_scan

    index = series.read_index("induction-2l")
    final = index["checkpoints"][-1]["step"]
    table = D.dynamics_table("induction-2l", steps=[final], n_prompts=16, ks=(2,))
    scan = head_scan(load_model("induction-2l"), seed=0)
    for name, hs in scan.items():
        t = table[table["metric"] == name].sort_values(["layer", "head"])
        got = torch.tensor(t["value"].to_numpy(), dtype=torch.float32).reshape(hs.scores.shape)
        torch.testing.assert_close(got, hs.scores.float(), rtol=0, atol=0, equal_nan=True)
    assert set(table["metric"]) >= {"train_loss", "loss_by_position", "icl_score", "previous_token",
                                     "induction", "prefix_matching", "copying", "k_composition", "accuracy"}
    ind = table[(table["metric"] == "induction")]
    assert (ind["ci_low"] <= ind["value"] + 1e-9).all() and (ind["value"] <= ind["ci_high"] + 1e-9).all()
    assert (ind["n"] == 16).all()
    assert set(table.columns) == set(D.DYN_COLUMNS)


def test_icll_dynamics_has_the_scans_ngram_heads_and_heldout_rows_at_the_final_checkpoint():
    from experiments.models.loading import load_model
    from experiments.studies.scan import head_scan

    final = series.read_index("icll-dfa")["checkpoints"][-1]["step"]
    table = D.dynamics_table("icll-dfa", steps=[final], n_prompts=8, ks=(1,))
    model = load_model("icll-dfa")
    scan = head_scan(model, seed=0)
    assert {"ngram_2", "ngram_3", "ngram_4"} <= set(scan)
    for name in ("ngram_2", "ngram_3", "ngram_4", "induction"):
        t = table[table["metric"] == name].sort_values(["layer", "head"])
        got = torch.tensor(t["value"].to_numpy(), dtype=torch.float32).reshape(scan[name].scores.shape)
        torch.testing.assert_close(got, scan[name].scores.float(), rtol=0, atol=0, equal_nan=True)
    per_seq = model.zoo_card["metrics"]["per_sequence"]["model"]
    for key in ("accuracy", "l1"):
        row = table[table["metric"] == f"heldout_dfa_{key}"].iloc[0]
        assert row["value"] == pytest.approx(per_seq[key]["value"], abs=1e-4)
        assert row["n"] == per_seq[key]["n"] and row["ci_low"] <= row["value"] <= row["ci_high"]
        diff = table[table["metric"] == f"heldout_dfa_{key}_minus_3gram"].iloc[0]
        vs = model.zoo_card["metrics"]["vs_3gram_per_sequence"][key]
        assert diff["value"] == pytest.approx(vs["difference"], abs=1e-4)


def test_ngram_emergence_finds_each_orders_step_within_one_checkpoint():
    steps = series.log_steps(3000, 12)
    jumps = {"ngram_2": 40, "ngram_3": 500, "ngram_4": 2000}
    rows = []
    for s in steps:
        for layer in range(2):
            for head in range(2):
                for metric, jump in (("induction", 40), *jumps.items()):
                    on = (layer, head) == (1, 0) if metric != "ngram_4" else (layer, head) == (0, 1)
                    v = 0.1 + 0.6 * (s >= jump) if on else 0.05
                    rows.append({"step": s, "metric": metric, "layer": layer, "head": head, "k": -1,
                                 "position": -1, "n": 8, "value": v, "ci_low": v, "ci_high": v})
    table = pd.DataFrame(rows, columns=D.DYN_COLUMNS)
    summary = D.phase_summary(table)
    for metric, jump in jumps.items():
        q = summary["ngram"][metric]
        assert q["start"] < jump <= q["end"] and q["before"] == pytest.approx(0.1)
        assert q["after"] == pytest.approx(0.7) and q["final"] == pytest.approx(0.7)
    assert summary["ngram"]["ngram_4"]["head_after"] == [0, 1]
    assert summary["ngram"]["ngram_3"]["head_after"] == [1, 0]
    text = D.format_phase(summary)
    assert "ngram_3 (best head) rises fastest" in text and "L0H1" in text


# ------------------------------------------------------------------------------- phase change
@pytest.mark.parametrize("true_step", [3, 40, 333, 1234, 5000])
def test_phase_change_finds_a_synthetic_step_within_one_checkpoint(true_step):
    steps = series.log_steps(6000, 12)
    rng = np.random.default_rng(true_step)
    values = [0.1 + 0.8 * (s >= true_step) + rng.normal(0, 0.01) for s in steps]
    pc = D.phase_change(steps, values)
    assert pc.start < true_step <= pc.end  # the window is the pair of checkpoints around the step
    assert steps.index(pc.end) == steps.index(pc.start) + 1
    assert pc.before == pytest.approx(0.1, abs=0.05) and pc.after == pytest.approx(0.9, abs=0.05)
    assert pc.onset == pc.done == pc.end


def test_phase_change_on_a_sigmoid_centres_on_its_midpoint():
    steps = series.log_steps(10000, 30)
    mid = 800
    values = [1 / (1 + math.exp(-4 * (math.log(s) - math.log(mid)))) for s in steps]
    pc = D.phase_change(steps, values)
    assert pc.start <= mid <= pc.end
    assert pc.onset < mid < pc.done
    with pytest.raises(ValueError, match="increasing"):
        D.phase_change([5, 3], [0, 1])


def test_loss_bump_recovers_a_known_bump():
    curve = np.concatenate([np.full(200, 3.0), 3.0 + 0.3 * np.sin(np.linspace(0, np.pi, 100)),
                            np.linspace(3.0, 1.0, 200), np.full(500, 1.0)])
    out = D.loss_bump(curve, start=200, end=500, smooth=5)
    assert out["bump"] == pytest.approx(0.3, abs=0.01)
    assert out["drop"] == pytest.approx(2.0, abs=0.05)
    flat = D.loss_bump(np.linspace(3, 1, 1000), start=100, end=400)
    assert flat["bump"] == pytest.approx(0.0, abs=1e-9)


def test_phase_summary_on_a_synthetic_table_reports_numbers():
    steps = series.log_steps(2000, 12)
    rows = []
    for s in steps:
        ind, prev = 0.05 + 0.85 * (s >= 300), 0.1 + 0.7 * (s >= 100)
        for layer, head, v, metric in ((1, 0, ind, "induction"), (0, 2, prev, "previous_token")):
            rows.append({"step": s, "metric": metric, "layer": layer, "head": head, "k": -1,
                         "position": -1, "n": 16, "value": v, "ci_low": v - 0.01, "ci_high": v + 0.01})
        rows.append({"step": s, "metric": "icl_score", "layer": -1, "head": -1, "k": -1, "position": -1,
                     "n": 32, "value": -4.0 * (s >= 300), "ci_low": math.nan, "ci_high": math.nan})
    summary = D.phase_summary(pd.DataFrame(rows), np.linspace(5, 1, 2000))
    p = summary["induction"]
    assert p["start"] < 300 <= p["end"] and p["head_after"] == [1, 0]
    assert summary["previous_token"]["end"] >= 100 > summary["previous_token"]["start"]
    assert summary["previous_token"]["before_or_with"] is True
    assert summary["icl_score"]["after"] == pytest.approx(-4.0)
    assert "bump" in summary["loss"]
    text = D.format_phase(summary)
    assert "induction score" in text and "previous-token head L0H2" in text


# ------------------------------------------------------------------------------- surfaces
def test_dynamics_is_a_registered_sweep_analysis():
    from experiments.runs.analyses import get_analysis

    spec = get_analysis("dynamics")
    assert spec.check("induction-2l", "") is None
    assert "no checkpoint series" in spec.check("linreg-gpt", "") or "series" in spec.check("linreg-gpt", "")
    res = spec.run("induction-2l", "", 0, 0, {"steps": [1], "n_prompts": 8})
    assert "shots" in res.table.columns and "k" not in res.table.columns
    assert set(res.table["step"]) == {1}
    assert res.tensors["1/induction"].shape == (2, 4)


def test_cli_prints_the_table_overview(capsys, tmp_path):
    from experiments.cli.main import main

    out_csv = tmp_path / "dyn.csv"
    assert main(["dynamics", "induction-2l", "--steps", "1", "2", "--n-prompts", "8", "--quiet",
                 "--out", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert "step      1" in text and "induction" in text and "rises fastest" in text
    assert set(pd.read_csv(out_csv)["step"]) == {1, 2}
    assert main(["dynamics", "induction-2l", "--steps", "3"]) == 2  # not a checkpoint: clear error
    assert "its steps" in capsys.readouterr().err


def _synthetic_table(jump: int = 300, prev_jump: int = 100) -> pd.DataFrame:
    steps = series.log_steps(2000, 12)
    rows = []
    for s in steps:
        for layer in range(2):
            for head in range(3):
                ind = 0.05 + 0.85 * (s >= jump) if (layer, head) == (1, 1) else 0.02
                prev = 0.1 + 0.7 * (s >= prev_jump) if (layer, head) == (0, 2) else 0.05
                for metric, v in (("induction", ind), ("previous_token", prev)):
                    rows.append({"step": s, "metric": metric, "layer": layer, "head": head, "k": -1,
                                 "position": -1, "n": 16, "value": v, "ci_low": v - 0.01, "ci_high": v + 0.01})
        rows.append({"step": s, "metric": "icl_score", "layer": -1, "head": -1, "k": -1, "position": -1,
                     "n": 32, "value": -4.0 * (s >= jump), "ci_low": math.nan, "ci_high": math.nan})
        rows.append({"step": s, "metric": "accuracy", "layer": -1, "head": -1, "k": 2, "position": -1,
                     "n": 64, "value": 0.5 + 0.4 * (s >= jump), "ci_low": 0.4, "ci_high": 0.95})
        for p in range(1, 5):
            rows.append({"step": s, "metric": "loss_by_position", "layer": -1, "head": -1, "k": -1,
                         "position": p, "n": 8, "value": 5.0 - p * (s >= jump), "ci_low": 4, "ci_high": 6})
    return pd.DataFrame(rows, columns=D.DYN_COLUMNS)


def test_report_section_quotes_the_window_of_a_hand_made_store(tmp_path):
    from experiments.runs.config import Unit
    from experiments.runs.report import build_report
    from experiments.runs.store import ResultsStore

    store = ResultsStore(tmp_path / "res")
    prov = {"model_hash": "x", "sweep": "t", "config_hash": "c", "git_commit": "g", "versions": "{}",
            "host": "h", "run_id": "r", "computed_at": "now", "wall_time_s": 1.0, "cpu_time_s": 1.0}
    store.write_unit(Unit("m", "", 0, 0, "dynamics"), _synthetic_table().rename(columns={"k": "shots"}), prov)
    rep = build_report(store)
    texts = "\n".join(f.text for f in rep.findings)
    steps = series.log_steps(2000, 12)
    after = next(s for s in steps if s >= 300)
    before = steps[steps.index(after) - 1]
    assert f"m: best induction head before the phase change (step {before}): 0.050" in texts
    assert f"m: best induction head after the phase change (step {after}): 0.900" in texts
    assert "previous-token head rises fastest" in texts and "before or with the induction head" in texts
    assert "dynamics/m/phase_change" in rep.figures
    df = store.frame()
    assert all(f.recompute(df) == pytest.approx(f.value) for f in rep.findings if f.section == "training dynamics")


def test_app_logic_dynamics_figures_and_grids():
    from iclwb_app import training_view

    table = _synthetic_table()
    grid = training_view.dynamics_head_matrix(table, 2000, "induction")
    assert grid.shape == (2, 3) and grid[1, 1] == pytest.approx(0.9) and grid[0, 0] == pytest.approx(0.02)
    assert training_view.dynamics_head_metrics(table) == ["induction", "previous_token"]
    fig = training_view.dynamics_curves_figure(table, ["induction", "previous_token"], (204, 397), step=2000)
    assert len(fig.data) == 2 and fig.layout.xaxis.type == "log" and len(fig.layout.shapes) == 2
    assert list(fig.data[0].y)[-1] == pytest.approx(0.9)
    acc = training_view.dynamics_scalar_figure(table, ["accuracy", "icl_score"], (204, 397))
    assert {t.name for t in acc.data} == {"accuracy k=2", "icl_score"}
    curve = pd.DataFrame({"step": np.arange(1, 101), "loss": np.linspace(5, 1, 100)})
    assert len(training_view.training_loss_figure(curve, (10, 20)).data) == 2
    assert len(training_view.loss_by_position_figure(table, [1, 2000]).data) == 2
    with pytest.raises(KeyError):
        training_view.dynamics_head_matrix(table, 3, "induction")


def test_a_previous_token_head_that_forms_later_is_reported_after():
    late = D.phase_summary(_synthetic_table(jump=300, prev_jump=1000))
    assert late["previous_token"]["before_or_with"] is False
    assert late["previous_token"]["start"] < 1000 <= late["previous_token"]["end"]
    early = D.phase_summary(_synthetic_table(jump=300, prev_jump=30))
    assert early["previous_token"]["before_or_with"] is True


@pytest.mark.slow
def test_app_page_runs_and_its_heatmap_follows_the_step_slider():
    from tests.app.test_app import app, n_charts, no_exception

    at = app().run()
    at.switch_page("views/7_training_dynamics.py").run()
    no_exception(at)
    at.selectbox(key="dyn_model").set_value("induction-2l").run()
    at.button(key="dyn_run").click().run()
    no_exception(at)
    heads = 6  # induction-2l: previous_token, induction, duplicate_token, prefix_matching, copying, k_composition
    assert n_charts(at) >= heads + 4
    table = D.dynamics_table("induction-2l", steps=[204], n_prompts=16, ks=(0, 2, 8))
    at.select_slider(key="dyn_step").set_value(204).run()
    no_exception(at)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    fig = next(f for f in specs if f["layout"].get("title", {}).get("text") == "induction @ step 204")
    z = fig["data"][0]["z"]
    if isinstance(z, dict):  # plotly's typed-array encoding: base64 data, dtype, shape "2, 4"
        import base64

        shape = tuple(int(x) for x in str(z.get("shape", "2, 4")).replace(" ", "").split(","))
        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    z = np.asarray(z, dtype=float)
    want = table[table.metric == "induction"].sort_values(["layer", "head"])["value"].to_numpy().reshape(2, 4)
    np.testing.assert_allclose(z, want, atol=1e-6)
    assert any("rises fastest between steps" in t.value for t in at.text)
