"""Training dynamics: a zoo model's checkpoint series, with a step slider driving the head-score
heatmaps and the curves with the phase-change window marked (``experiments.studies.dynamics``)."""

from __future__ import annotations

import streamlit as st

from experiments.studies import dynamics
from iclwb_app import attention_view, training_view, ui


@st.cache_data(max_entries=8, show_spinner=False)
def cached_dynamics(name: str, seed: int, n_prompts: int):

    table = dynamics.dynamics_table(name, seed=seed, n_prompts=n_prompts, ks=(0, 2, 8))
    return table, dynamics.training_curve(name)


st.title("Training dynamics")
st.caption("Every checkpoint of a zoo model's training series (evenly spaced in log step): head "
           "scores, losses, the ICL score and in-context accuracy, with 95% intervals over prompts. "
           "Series ship for induction-2l and icl-classify; others: `iclwb zoo train NAME --checkpoints 12`.")
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
    with st.status(f"Scoring every checkpoint of {name}…", expanded=False) as status:
        df, curve = cached_dynamics(name, seed, n_prompts)
        status.update(label=f"{name}: {df['step'].nunique()} checkpoints", state="complete")
except ui.EXPECTED_ERRORS as err:
    ui.show_error(err, "dynamics failed")
    st.stop()
ui.mark_run("dyn_requested", key)


steps = sorted(df["step"].unique().tolist())
heads = training_view.dynamics_head_metrics(df)
score = "induction" if "induction" in heads else heads[0]
summary = dynamics.phase_summary(df, curve["loss"].tolist(), score=score)
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
    st.plotly_chart(training_view.training_loss_figure(curve, window), width="stretch", key="dyn_loss")
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
