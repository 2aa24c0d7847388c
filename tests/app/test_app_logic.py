"""The app's pure logic (iclwb_app, experiments.cli.app): known answers and invariants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iclwb_app import (
    attention_view,
    circuit_view,
    icl_gd_view,
    model_info,
    prompting,
    results_view,
    scan_view,
    stats_view,
)
from probes.heads import attention_patterns
from probes.prompt import PromptError
from tests.helpers import tiny_bridge


def make_store(root: Path, models=("induction-2l", "icl-classify"), ks=(1, 2, 4), seeds=(0, 1)) -> Path:
    """A small sweep results store with known numbers: accuracy = 0.1 * k + 0.01 * seed (+0.5 for
    the second model), plus an attention metric by layer."""
    from experiments.runs.config import Unit
    from experiments.runs.store import ResultsStore

    store = ResultsStore(root)
    for mi, model in enumerate(models):
        for k in ks:
            for seed in seeds:
                table = pd.DataFrame({
                    "metric": ["accuracy", "accuracy_gd", "attn_to_label", "attn_to_label"],
                    "value": [0.1 * k + 0.01 * seed + 0.5 * mi, 0.05 * k, 0.2, 0.4],
                    "layer": [-1, -1, 0, 1],
                })
                store.write_unit(Unit(model=model, task="classify", k=k, seed=seed,
                                      analysis="icl_vs_gd"), table, provenance={"wall_time_s": 0.1})
    return root


# ------------------------------------------------------------------------------------ prompts
def test_kv_recall_prompt_roles_and_answer():
    b = prompting.kv_recall_prompt(vocab=50, k=5, seed=3)
    assert b.n_demos == 5 and b.seq_len == 3 * 5 + 2
    labels = b.label_tokens[0].tolist()
    assert sorted(b.candidates[0].tolist()) == sorted(labels)
    j = int(b.query_class[0])
    # the query repeats demonstration j's key and forerunner; its answer is that demo's label
    assert b.tokens[0, -2:].tolist() == b.tokens[0, 3 * j: 3 * j + 2].tolist()
    assert int(b.target[0]) == labels[j]
    roles = b.role_of_positions()[0]
    assert roles[:3] == ["demo_text", "forerunner", "label"] and roles[-1] == "readout"
    with pytest.raises(model_info.AppInputError, match="smaller k"):
        prompting.kv_recall_prompt(vocab=10, k=4)


def test_parse_token_prompt_roles():
    model = tiny_bridge(d_vocab=50, n_ctx=16)
    b = prompting.parse_prompt(model, "1 2 3 | 4 5 6 7 | 1 2")
    assert b.tokens[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 1, 2]
    assert b.role_of_positions()[0] == ["demo_text", "forerunner", "label", "demo_text", "demo_text",
                                        "forerunner", "label", "query_text", "readout"]
    plain = prompting.parse_prompt(model, "5 9 12")
    assert plain.n_demos == 0 and int(plain.readout[0]) == 2


@pytest.mark.parametrize("text, match", [
    ("1 2 x", "not a token id"),
    ("1 2 99", "outside the vocabulary"),
    ("", "empty"),
    ("1 | 2 3", "forerunner and a label"),
    (" ".join(["3"] * 17), "context"),
])
def test_parse_token_prompt_errors(text, match):
    model = tiny_bridge(d_vocab=50, n_ctx=16)
    with pytest.raises(PromptError, match=match):
        prompting.parse_prompt(model, text)


class _WordTokenizer:
    """A whitespace tokenizer: each word (with its leading space) or ':' / newline is one token."""

    bos_token_id = 0
    pad_token_id = 0

    def __init__(self):
        self.vocab = ["<bos>", ":", "\n"]

    def _id(self, piece):
        if piece not in self.vocab:
            self.vocab.append(piece)
        return self.vocab.index(piece)

    def encode(self, text, add_special_tokens=False):
        import re

        return [self._id(p) for p in re.findall(r"\s?[^\s:]+|:|\n", text)]

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)


def test_parse_text_prompt_roles_and_single_token_labels():
    model = tiny_bridge(d_vocab=50, n_ctx=32)
    model.tokenizer = _WordTokenizer()
    b = prompting.parse_prompt(model, "great movie: positive\nawful plot: negative\nloved it:")
    roles = b.role_of_positions()[0]
    labels = [model.tokenizer.decode([t]) for t in b.label_tokens[0].tolist()]
    assert labels == [" positive", " negative"]
    assert roles[0] == "other" and roles[-1] == "readout" and roles.count("label") == 2
    assert sorted(b.candidates[0].tolist()) == sorted(b.label_tokens[0].tolist())
    with pytest.raises(PromptError, match="single tokens"):
        prompting.parse_prompt(model, "great movie: very good\nloved it:")
    # the query line without its final ':' used to be read as plain text, demonstrations and all
    for text in ("great movie: positive\nloved it", "loved it: positive"):
        with pytest.raises(PromptError, match="must end with ':'"):
            prompting.parse_prompt(model, text)
    plain = prompting.parse_prompt(model, "a plain sentence")
    assert plain.n_demos == 0 and plain.role_of_positions()[0][-1] == "readout"


def test_max_k_is_the_largest_k_the_context_holds():
    """The explorer's k input is bounded by max_k: its prompt fits n_ctx, one more demonstration
    does not (or cannot be built)."""
    for n_ctx in (48, 96):
        model = tiny_bridge(d_vocab=50, n_ctx=n_ctx)
        for task in ("induction", "classify"):
            k = prompting.max_k(model, task)
            assert prompting.task_prompt(model, task, k, 0).seq_len <= n_ctx
            with pytest.raises(ValueError):
                prompting.task_prompt(model, task, k + 1, 0)
    assert prompting.max_k(tiny_bridge(d_vocab=50, n_ctx=96), "classify") > prompting.max_k(
        tiny_bridge(d_vocab=50, n_ctx=48), "classify")


def test_top_predictions_are_the_softmax_of_the_readout_logits():
    from probes.readout import readout_logits

    model = tiny_bridge(d_vocab=50, n_ctx=32)
    batch = prompting.parse_prompt(model, "1 2 3 | 4 5 6 | 1 2")
    top = attention_view.top_predictions(model, batch, 5)
    probs = torch.softmax(readout_logits(model, batch)[0], -1)
    assert top["token_id"].tolist() == torch.topk(probs, 5).indices.tolist()
    assert top["probability"].tolist() == pytest.approx(torch.topk(probs, 5).values.tolist(), abs=1e-6)
    assert top["probability"].is_monotonic_decreasing and top["rank"].tolist() == [1, 2, 3, 4, 5]
    assert top["target"].sum() == int(int(batch.target[0]) in top["token_id"].tolist())


def test_vector_model_rejects_prompts():
    class Vec(torch.nn.Module):
        cfg = None

    with pytest.raises(PromptError, match="real vectors"):
        prompting.parse_prompt(Vec(), "1 2 3")
    assert model_info.model_kind(Vec()) == "vector" and prompting.available_tasks(Vec()) == []


# ------------------------------------------------------------------------------------ attention
def test_prompt_view_matches_probes_and_rows_sum_to_one():
    model = tiny_bridge(d_vocab=50, n_ctx=32)
    batch = prompting.kv_recall_prompt(50, 4, seed=1)
    view = attention_view.prompt_view(model, batch)
    ref = attention_patterns(model, batch.tokens)[:, 0].numpy()
    np.testing.assert_allclose(view.patterns, ref, atol=1e-6)
    np.testing.assert_allclose(view.patterns.sum(-1), 1.0, atol=1e-5)
    label_pos = batch.label[0].tolist()
    mass = attention_view.role_mass(view, "label")
    np.testing.assert_allclose(mass[1, 2], ref[1, 2, view.readout, label_pos].sum(), atol=1e-6)
    # every role's mass together is the whole row
    total = sum(attention_view.role_mass(view, r) for r in set(view.roles))
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    np.testing.assert_allclose(attention_view.readout_attention(view, 0, 1), ref[0, 1, view.readout], atol=1e-6)


def test_figures_carry_the_numbers():
    model = tiny_bridge(d_vocab=50, n_ctx=32)
    view = attention_view.prompt_view(model, prompting.kv_recall_prompt(50, 3, seed=0))
    heat = attention_view.attention_heatmap(view, 1, 3)
    np.testing.assert_allclose(np.asarray(heat.data[0].z), view.patterns[1, 3])
    bar = attention_view.readout_bar(view, 1, 3)
    np.testing.assert_allclose(np.asarray(bar.data[0].y), view.patterns[1, 3, view.readout])
    assert len(bar.data[0].x) == view.readout + 1
    grid = attention_view.layer_head_heatmap(attention_view.previous_token_mass(view), "prev", selected=(1, 2))
    assert np.asarray(grid.data[0].z).shape == (2, 4) and len(grid.layout.shapes) == 1
    html = attention_view.token_strip_html(["<a>", "b"], ["label", "readout"])
    assert "&lt;a&gt;" in html and attention_view.ROLE_COLOURS["label"] in html


def test_previous_token_mass_known_answer():
    T = 5
    pat = np.zeros((1, 2, T, T), dtype=np.float32)
    pat[0, 0, 0, 0] = 1
    for i in range(1, T):
        pat[0, 0, i, i - 1] = 1.0  # head 0: pure previous-token
    pat[0, 1] = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]  # head 1: uniform
    view = attention_view.PromptView(list(range(T)), [str(i) for i in range(T)], ["other"] * T, pat, T - 1, -1)
    mass = attention_view.previous_token_mass(view)
    assert mass[0, 0] == pytest.approx(1.0)
    assert mass[0, 1] == pytest.approx(np.mean([1 / i for i in range(2, T + 1)]))


# ------------------------------------------------------------------------------------ head scan
def test_scan_frame_round_trip_and_top_heads():
    from probes.heads import HeadScores

    a = torch.tensor([[0.1, 0.9], [0.5, 0.3]])
    b = torch.tensor([[0.7, 0.2], [0.0, 0.4]])
    df = scan_view.scan_frame({"induction": HeadScores("induction", a), "copying": HeadScores("copying", b)})
    np.testing.assert_allclose(scan_view.scan_matrix(df, "induction"), a.numpy())
    top = scan_view.top_heads(df, "induction", n=3)
    assert top["head_id"].tolist() == ["L0H1", "L1H0", "L1H1"]
    assert top["copying"].tolist() == pytest.approx([0.2, 0.0, 0.4])
    assert scan_view.parse_head_id("L1H0") == (1, 0)
    with pytest.raises(model_info.AppInputError):
        scan_view.parse_head_id("head 3")
    with pytest.raises(model_info.AppInputError, match="no score"):
        scan_view.scan_matrix(df, "nope")


# ------------------------------------------------------------------------------------ results
def test_load_results_errors_name_the_fix(tmp_path):
    with pytest.raises(model_info.AppInputError, match="does not exist"):
        results_view.load_results(tmp_path / "missing")
    with pytest.raises(model_info.AppInputError, match="no Parquet"):
        results_view.load_results(tmp_path)
    (tmp_path / "units").mkdir()
    (tmp_path / "store.json").write_text("{}")
    with pytest.raises(model_info.AppInputError, match="no result rows"):
        results_view.load_results(tmp_path)


def test_results_filter_plot_and_csv(tmp_path):
    root = make_store(tmp_path / "store")
    df = results_view.load_results(root)
    assert len(df) == 2 * 3 * 2 * 4
    opts = results_view.filter_options(df)
    assert opts["k"] == [1, 2, 4] and opts["model"] == ["icl-classify", "induction-2l"]
    sub = results_view.filter_results(df, model=["induction-2l"], k=[2, 4], analysis=[])
    assert set(sub["model"]) == {"induction-2l"} and set(sub["k"]) == {2, 4}
    assert "accuracy" in results_view.metric_names(df)
    fig = results_view.metric_figure(df, "accuracy", x="k", color="model")
    ind = next(t for t in fig.data if t.name == "induction-2l")
    # mean over seeds 0 and 1 of 0.1 k + 0.01 seed
    assert list(ind.y) == pytest.approx([0.1 * k + 0.005 for k in (1, 2, 4)])
    # no per-prompt rows: the CI is over the two seeds, whose bootstrap means span [x, x + 0.01]
    assert list(ind.error_y.array) == pytest.approx([0.005] * 3, abs=1e-9)
    assert list(ind.error_y.arrayminus) == pytest.approx([0.005] * 3, abs=1e-9)
    back = pd.read_csv(__import__("io").BytesIO(results_view.results_csv(sub)))
    assert len(back) == len(sub) and set(back["k"]) == {2, 4}
    # plain Parquet folders (not a store) are read too
    plain = tmp_path / "plain"
    plain.mkdir()
    pd.DataFrame({"model": ["m"], "k": [1], "accuracy": [0.25]}).to_parquet(plain / "a.parquet")
    assert results_view.metric_names(results_view.load_results(plain)) == ["accuracy"]


def test_results_db_pushes_filters_into_duckdb_and_keeps_current_units(tmp_path):
    """ResultsDB answers what the pandas path answers (filter options, counts, the selected rows,
    the CI table) and, on a store with a superseded run, shows the current unit only."""
    from iclwb_app.results_db import ResultsDB
    from tests.helpers import store_with_superseded

    root = make_store(tmp_path / "store")
    df, db = results_view.load_results(root), ResultsDB.open(root, root)
    assert db.n_rows == len(df) and db.filter_options() == results_view.filter_options(df)
    sel = dict(model=["induction-2l"], k=[2, 4], analysis=[])
    sub = results_view.filter_results(df, **sel)
    assert db.count(**sel) == len(sub) and db.count(model=["nope"]) == 0
    got = db.frame(**sel).sort_values(["k", "seed", "metric", "layer"]).reset_index(drop=True)
    want = sub.sort_values(["k", "seed", "metric", "layer"]).reset_index(drop=True)
    assert got["value"].tolist() == pytest.approx(want["value"].tolist())
    assert len(db.frame(limit=5)) == 5 and db.metric_names(**sel) == results_view.metric_names(sub)
    agg = results_view.metric_summary(db.metric_rows("accuracy", ["model", "k"], **sel), "accuracy", "k", "model")
    want_ci = results_view.metric_ci_table(sub, "accuracy", ["model", "k"])
    pd.testing.assert_frame_equal(agg.sort_values("k").reset_index(drop=True),
                                  want_ci.sort_values("k").reset_index(drop=True))
    assert db.count(no_such_column=["x"]) == 0
    back = pd.read_csv(__import__("io").BytesIO(db.csv(**sel)))
    assert len(back) == len(sub)

    store, big, small = store_with_superseded(tmp_path / "sup")
    sdb = ResultsDB.open(store.root, store.root)
    assert sdb.distinct("unit_key") == [big] and small in sdb.attrs["iclwb.superseded"]
    assert "1 superseded run" in results_view.superseded_note(sdb)


# ------------------------------------------------------------------------------------ CLI
def test_app_cli_builds_a_localhost_streamlit_command(tmp_path):
    from experiments.cli.app import streamlit_command
    from experiments.cli.main import build_parser

    args = build_parser().parse_args(["app", "--results", str(tmp_path), "--server.port", "8765",
                                      "--theme.base=dark"])
    assert args.results == str(tmp_path) and args.streamlit_args == ["--server.port", "8765",
                                                                     "--theme.base=dark"]
    cmd = streamlit_command(args.results, port=9000, extra=args.streamlit_args)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/main.py")
    assert cmd[cmd.index("--server.address") + 1] == "localhost"
    assert cmd[-3:] == ["--", "--results", str(tmp_path.resolve())]
    assert "--theme.base=dark" in cmd and cmd[cmd.index("--server.port") + 1] == "9000"


def test_app_cli_prints_the_address_it_binds_and_passes_the_results_folder(tmp_path):
    """The printed address follows --port, then --server.port / --server.address (both spellings),
    else the first free port from 8501, which is then passed to Streamlit; the results folder also
    reaches the server as ICLWB_RESULTS (read by a first visit to any page URL)."""
    import socket

    from experiments.cli.app import DEFAULT_PORT, app_env, port_free, server_address

    assert server_address("localhost", 9000, ["--server.port", "8765"]) == ("localhost", 9000, False)
    assert server_address("localhost", None, ["--server.port", "8765"]) == ("localhost", 8765, False)
    assert server_address("localhost", None, ["--server.port=8766", "--server.address=127.0.0.1"]) == (
        "127.0.0.1", 8766, False)
    host, port, passed = server_address("localhost", None, [])
    assert passed and port >= DEFAULT_PORT and port_free("localhost", port)
    with socket.socket() as held:  # a taken port is skipped
        held.bind(("localhost", port))
        held.listen()
        assert not port_free("localhost", port)
        assert server_address("localhost", None, [])[1] > port
    assert app_env(tmp_path)["ICLWB_RESULTS"] == str(tmp_path.resolve())


def test_linreg_comparison_of_the_hand_built_gd_layer():
    """The hand-built one-step-GD layer (von Oswald) agrees with GD at its learning rate: near-zero
    prediction difference and sensitivity cosine 1, as the ICL-vs-GD page shows it."""
    from experiments.models.zoo.linreg import gd_lsa

    model = gd_lsa(d=3, eta=0.5, max_k=16)
    comp, order = icl_gd_view.linreg_comparison(model, "gd-lsa", ks=[4, 8], n_tasks=32, seed=0, gd_lr=0.5)
    assert comp["k"].tolist() == [4, 8]
    assert (comp["preds_diff"] < 1e-4).all() and (comp["sens_cos"] > 1 - 1e-4).all()
    rand = gd_lsa(d=3, eta=0.05, max_k=16)  # a different step size is not GD at lr 0.5
    comp2, _ = icl_gd_view.linreg_comparison(rand, "gd-lsa-0.05", ks=[4], n_tasks=32, seed=0, gd_lr=0.5)
    assert comp2["preds_diff"].iloc[0] > 1e-2
    assert set(order["method"]) >= {"model", "sgd"} and (order["order_std"] >= 0).all()
    with pytest.raises(model_info.AppInputError, match="k >= 1"):
        icl_gd_view.linreg_comparison(model, "gd-lsa", ks=[0])


def test_app_states_circuit_verdicts_with_intervals():
    """The circuit page's verdict lines on the hand-built label-copy model: cutting s_q <- y_i is a
    real effect against its control; edges the model does not use are 'no effect detected'."""

    from circuits import icl_circuit as C
    from circuits import toy

    table = C.circuit_table(toy.label_copy_model(), {s: toy.label_copy_batch(16, 3, seed=s) for s in (0, 1)},
                            model_name="toy", task="label-copy", steps=("ablation",))
    abl = circuit_view.ablation_table(table)
    lines = stats_view.ablation_verdicts(abl)
    by = {line.split(":")[0]: line for line in lines}
    assert "significant" in by["knockout yi_to_sq (layers 0-0)"]
    assert "no effect detected (MDE" in by["knockout si_to_yi (layers 0-0)"]
    assert all(re.search(r"\[[-+]?\d", line) and "n=32" in line for line in lines)
    fig = circuit_view.ablation_figure(abl)
    assert "95% CI" in fig.layout.title.text and fig.data[0].error_y.arrayminus is not None
    assert {"n", "ci_low", "ci_high", "effect", "q_value", "verdict"} <= set(stats_view.stats_view(abl).columns)


def test_metrics_by_k_error_bars_are_intervals_over_prompts():
    import pandas as pd

    from iclwb_app import (
        icl_gd_view,
    )

    rows = [{"metric": "acc_icl", "k": k, "prompt": i, "seed": 0, "value": float(i < 30 + 5 * k)} for k in (1, 2)
            for i in range(60)]
    rows += [{"metric": "acc_icl", "k": k, "prompt": -1, "seed": 0, "value": (30 + 5 * k) / 60} for k in (1, 2)]
    fig = icl_gd_view.metrics_by_k_figure(pd.DataFrame(rows), ["acc_icl"], "acc")
    y = list(fig.data[0].y)
    assert y == pytest.approx([35 / 60, 40 / 60])  # the aggregate rows are not counted twice
    assert all(0 < e < 0.2 for e in fig.data[0].error_y.array)


def test_metrics_by_k_error_bars_fall_back_to_seeds():
    """A group with per-prompt rows gets its CI over them (4 of 8 correct: Wilson [0.2152,
    0.7848]); a group with only per-seed rows over its seeds (n = 2)."""
    agg = pd.DataFrame({"k": [2, 2, 4, 4], "metric": "acc_icl", "value": [0.5, 0.7, 0.6, 0.8], "layer": -1,
                        "prompt": -1})
    per = pd.DataFrame({"k": 2, "metric": "acc_icl", "value": [0.0, 1.0] * 4, "layer": -1, "prompt": range(8)})
    tr = icl_gd_view.metrics_by_k_figure(pd.concat([agg, per], ignore_index=True), ["acc_icl"], "t").data[0]
    assert list(tr.x) == [2, 4] and list(tr.y) == pytest.approx([0.5, 0.7])
    assert tr.y[0] + tr.error_y.array[0] == pytest.approx(0.7848, abs=1e-4)
    assert tr.y[0] - tr.error_y.arrayminus[0] == pytest.approx(0.2152, abs=1e-4)
    assert list(tr.customdata) == [8, 2]


def test_metric_figure_and_table_known_interval():
    """The results page: 15 of 20 correct has Wilson 95% CI [0.5313, 0.8881], in the figure's error
    bars and the table beside it."""
    df = pd.DataFrame({"model": "m", "k": 1, "metric": "accuracy", "value": [1.0] * 15 + [0.0] * 5,
                       "prompt": range(20), "seed": 0})
    t = results_view.metric_ci_table(df, "accuracy", ["model", "k"])
    assert list(t.columns) == ["model", "k", "n", "value", "ci_low", "ci_high"]
    r = t.iloc[0]
    assert (r["n"], r["value"]) == (20, 0.75)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.5313, 0.8881), abs=1e-4)
    fig = results_view.metric_figure(df, "accuracy", x="k", color="model")
    assert fig.data[0].error_y.array[0] == pytest.approx(0.8881 - 0.75, abs=1e-4)
    assert "95% CI" in fig.layout.title.text
