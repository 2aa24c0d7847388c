"""The ICL-vectors page, headless (streamlit.testing AppTest): it runs, shows its figures, shows
the library's numbers for the same inputs, and turns bad input into st.error."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = Path(__file__).resolve().parents[2] / "app" / "views" / "6_ICL_Vectors.py"
MODEL = "induction-2l"  # a small shipped token model (vocab 256 covers the classify task)


def page() -> AppTest:
    at = AppTest.from_file(str(PAGE), default_timeout=180)
    at.session_state["vec_model_select"] = MODEL
    return at


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.mark.slow
def test_page_shows_library_numbers():
    at = page()
    at.run()
    no_exception(at)
    at.number_input(key="vec_n").set_value(8)
    at.multiselect(key="vec_methods").set_value(["task_vector", "icv", "anchors"])
    at.text_input(key="vec_lambdas").set_value("0, 0.1")
    at.run()
    no_exception(at)
    assert not at.error
    assert len(at.get("plotly_chart")) == 4  # summary bars, two sweeps, flows
    task = at.selectbox(key="vec_task").value
    from experiments.models.loading import load_model
    from experiments.studies import vectors_study as vs

    out = vs.run_study(load_model(MODEL), MODEL, task, k=4, n_prompts=8, seed=0,
                       methods=("task_vector", "icv", "anchors"), lambdas=(0.0, 0.1), layers=[0, 1],
                       n_dev=4, n_aie_prompts=8, n_anchor_prompts=8)
    want = out["summary"].set_index("method")["with vector"]
    shown = {m.label.split(":")[0]: float(m.value) for m in at.metric}
    assert shown["task_vector"] == pytest.approx(want["task_vector"], abs=1e-3)
    assert shown["icv"] == pytest.approx(want["icv"], abs=1e-3)


@pytest.mark.slow
def test_bad_input_shows_errors_not_tracebacks():
    at = page()
    at.session_state["vec_n"] = 4
    at.session_state["vec_methods"] = ["task_vector"]
    at.run()
    no_exception(at)
    at.text_input(key="vec_lambdas").set_value("0, lots").run()
    no_exception(at)
    assert any("lambdas must be numbers" in e.value for e in at.error)
    at.text_input(key="vec_lambdas").set_value("0, 0.1").run()
    from experiments.models.loading import load_model
    from iclwb_app import prompting

    model, task = load_model(MODEL), at.selectbox(key="vec_task").value
    k_max = prompting.max_k(model, task, 64)  # the k input stops where the prompt outgrows n_ctx 64
    assert at.number_input(key="vec_k").max == k_max < 20
    with pytest.raises(ValueError, match="context"):
        prompting.task_prompt(model, task, k_max + 1)
    at.selectbox(key="vec_model_select").set_value("Other (name or folder)…").run()
    at.text_input(key="vec_model_other").set_value("./no/such/model").run()
    no_exception(at)
    assert any("cannot load model" in e.value for e in at.error)
