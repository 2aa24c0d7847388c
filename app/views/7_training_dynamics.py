"""Training dynamics: a zoo model's checkpoint series, with a step slider driving the head-score
heatmaps and the curves with the phase-change window marked (``experiments.studies.dynamics``)."""

from __future__ import annotations

import streamlit as st

from experiments.studies import dynamics
from iclwb_app import attention_view, results_view, stored_view, training_view, ui


@st.cache_data(max_entries=8, show_spinner=False)
def cached_dynamics(name: str, seed: int, n_prompts: int):

    table = dynamics.dynamics_table(name, seed=seed, n_prompts=n_prompts, ks=(0, 2, 8))
    return table, dynamics.training_curve(name)


@st.cache_data(max_entries=8, show_spinner=False)
def cached_stored(_db, signature: tuple, name: str, seed: int):
    df = stored_view.dynamics_frame(_db.frame(analysis=["dynamics"], model=[name], seed=[seed]))
    try:
        curve = dynamics.training_curve(name)
    except (KeyError, OSError, ValueError):  # the series is not on this machine: no loss curve
        curve = None
    return df, curve


st.title("Training dynamics")
st.caption("Every checkpoint of a zoo model's training series (evenly spaced in log step): head "
           "scores, losses, the ICL score and in-context accuracy, with 95% intervals over prompts. "
           "Series ship for induction-2l and icl-classify; others: `iclwb zoo train NAME --checkpoints 12`.")
source, db = ui.source_picker("dyn_source", ["dynamics"])
if source == stored_view.STORED:
    if db is None or "analysis" not in db.columns or not db.count(analysis=["dynamics"]):
        st.info(f"{st.session_state.get('results_dir', '')} holds no training-dynamics units; run a sweep with "
                "the dynamics analysis, or use a live run.")
        st.stop()
    if results_view.superseded_note(db):
        st.caption(results_view.superseded_note(db))
    c1, c2 = st.columns([3, 1])
    name = c1.selectbox("Model", db.distinct("model", analysis=["dynamics"]), key="dyn_st_model")
    seed = int(c2.selectbox("Seed", db.distinct("seed", analysis=["dynamics"], model=[name]), key="dyn_st_seed"))
    signature = results_view.results_signature(st.session_state["results_dir"], ui.results_root())
    df, curve = cached_stored(db, signature, name, seed)
else:
    models = ui.guarded(training_view.dynamics_models, "listing checkpoint series") or []
    if not models:
        st.info("No zoo model has a checkpoint series: run `iclwb zoo train induction-2l --checkpoints 12`.")
        st.stop()
    c1, c2, c3 = st.columns([3, 1, 1])
    name = c1.selectbox("Model", models, key="dyn_model")
    seed = int(c2.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="dyn_seed"))
    n_prompts = int(c3.number_input("Prompts", min_value=8, max_value=256, value=16, step=8, key="dyn_n"))
    key = (name, seed, n_prompts)
    ui.wait_for_run("dyn_requested", key, True, "Run dynamics", "dyn_run",
                    note="Scores every checkpoint (about a minute for the small zoo models).")
    try:
        df, curve = ui.run_with_eta(lambda: cached_dynamics(name, seed, n_prompts),
                                    f"Scoring every checkpoint of {name}…", "dynamics", n_prompts,
                                    ui.stored_wall_time(db, "dynamics", name) if n_prompts == 64 else None)
    except ui.EXPECTED_ERRORS as err:
        ui.show_error(err, "dynamics failed")
        st.stop()
    ui.mark_run("dyn_requested", key)
st.caption(f"{name}: {df['step'].nunique()} checkpoints")

steps = sorted(df["step"].unique().tolist())
heads = training_view.dynamics_head_metrics(df)
score = "induction" if "induction" in heads else heads[0]
summary = dynamics.phase_summary(df, curve["loss"].tolist() if curve is not None else None, score=score)
window = (summary[score]["start"], summary[score]["end"])

st.subheader("Phase change")
st.text(dynamics.format_phase(summary))

st.subheader("Head scores at one checkpoint")
step = st.select_slider("Training step", options=steps, value=steps[-1], key="dyn_step")
cols = st.columns(min(3, len(heads)))
for i, metric in enumerate(heads):
    with cols[i % len(cols)]:
        st.plotly_chart(attention_view.layer_head_heatmap(training_view.dynamics_head_matrix(df, step, metric),
                                              f"{metric} @ step {step}"),
                        width="stretch", key=f"dyn_heat_{metric}")

st.subheader("Curves")
st.plotly_chart(training_view.dynamics_curves_figure(df, heads, window, step), width="stretch", key="dyn_curves")
a, b = st.columns(2)
with a:
    if curve is not None:
        st.plotly_chart(training_view.training_loss_figure(curve, window), width="stretch", key="dyn_loss")
    else:
        st.info(f"The training-loss log of {name} is not on this machine (its checkpoint series is not installed).")
with b:
    st.plotly_chart(training_view.dynamics_scalar_figure(df, ["icl_score"], window, "ICL score (loss at 0.9T − 0.1T)",
                                              "nats"), width="stretch", key="dyn_icl")
acc = [m for m in df["metric"].unique() if str(m).endswith("accuracy")]
if acc:
    st.plotly_chart(training_view.dynamics_scalar_figure(df, acc, window, "In-context accuracy", "accuracy"),
                    width="stretch", key="dyn_acc")
st.plotly_chart(training_view.loss_by_position_figure(df, [steps[0], window[0], window[1], steps[-1]]),
                width="stretch", key="dyn_pos")
with st.expander("The tidy table"):
    st.dataframe(df, hide_index=True, width="stretch")
