"""experiments.vectors_study: tidy tables whose numbers equal direct library computations."""

import math

import pytest
import torch

from circuits import vectors
from experiments import vectors_study as vs
from probes.readout import model_accuracy
from tests.conftest import tiny_bridge


@pytest.fixture(scope="module")
def model():
    return tiny_bridge(attn_only=False, seed=7)


@pytest.fixture(scope="module")
def study(model):
    # 40 eval prompts: more than one accuracy chunk (32), so per-chunk read-out hooks are exercised
    return vs.run_study(model, "tiny", "toy", k=3, n_prompts=40, n_dev=8, seed=0, lambdas=(0.0, 0.3),
                        n_heads=3)


def test_tables_have_provenance_and_every_condition(study):
    acc = study["accuracy"]
    for col in ("model", "task", "k", "seed", "method", "condition", "accuracy", "n_prompts"):
        assert col in acc.columns
    assert set(acc.condition) == set(vs.CONDITIONS)
    s = study["summary"]
    assert list(s.method) == ["task_vector", "function_vector", "icv"]
    assert (s.n_prompts == 40).all()
    assert set(study["anchors"].flow) == {"S_wp", "S_pq", "S_ww"}


def test_numbers_equal_direct_computation(model, study):
    sets = vs.prompt_sets(model, "toy", 3, 40, 0, n_dev=8)
    zs = vectors.strip_demos(sets.eval)
    acc = study["accuracy"]
    ev = acc[acc.split == "eval"]
    zero = ev[(ev.method == "task_vector") & (ev.condition == "zero-shot")].accuracy.iloc[0]
    assert zero == pytest.approx(model_accuracy(model, zs, batch_size=64))
    icl = ev[(ev.method == "task_vector") & (ev.condition == "ICL")].accuracy.iloc[0]
    assert icl == pytest.approx(model_accuracy(model, sets.eval, batch_size=64))
    tv = vectors.task_vector(model, sets.extract)
    want = model_accuracy(model, zs, vectors.readout_hooks(zs, 1, tv[1], mode="replace"), batch_size=64)
    got = ev[(ev.method == "task_vector") & (ev.condition == "with vector") & (ev.layer == 1)].accuracy.iloc[0]
    assert got == pytest.approx(want)
    # ICV with lambda 0 is the zero-shot prompt
    lam0 = ev[(ev.method == "icv") & (ev.condition == "with vector") & (ev.lam == 0)].accuracy.iloc[0]
    assert lam0 == pytest.approx(zero)


def test_summary_picks_dev_best(study):
    acc, s = study["accuracy"], study["summary"]
    dev = acc[(acc.split == "dev") & (acc.method == "task_vector") & (acc.condition == "with vector")]
    row = s[s.method == "task_vector"].iloc[0]
    assert dev[dev.layer == row.layer].accuracy.iloc[0] == dev.accuracy.max()
    assert not math.isnan(row["with random vector"])


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(vs.StudyError, match="unknown task"):
        vs.make_task_prompts(model, "poetry", 2, 4, 0)
    with pytest.raises(vs.StudyError, match="k >= 1"):
        vs.prompt_sets(model, "toy", 0, 4, 0)
    with pytest.raises(vs.StudyError, match="tokenizer"):
        vs.make_task_prompts(model, "sentiment", 2, 4, 0)
    with pytest.raises(vs.StudyError, match="unknown methods"):
        vs.run_study(model, "tiny", "toy", methods=("magic",))


def test_figures_are_plotly(study):
    import plotly.graph_objects as go

    assert isinstance(vs.summary_figure(study["summary"]), go.Figure)
    for m in ("task_vector", "function_vector", "icv"):
        fig = vs.sweep_figure(study["accuracy"], m)
        assert len(fig.data) == 2
    assert isinstance(vs.flows_figure(study["anchors"]), go.Figure)
    assert vs.aie_figure(study["aie"]).data[0].z.shape == (2, 4)
