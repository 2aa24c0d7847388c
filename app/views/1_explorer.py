"""Attention explorer: one prompt, every head's attention, coloured by ICL role."""

from __future__ import annotations

import streamlit as st

from iclwb_app import attention_view, model_info, prompting, ui


@st.cache_data(max_entries=64, show_spinner=False)
def cached_view(model_name: str, source: str, task: str, k: int, seed: int, text: str) -> attention_view.PromptView:
    model = ui.get_model(model_name)
    if source == "task":
        batch = prompting.task_prompt(model, task, k, seed)
    else:
        batch = prompting.parse_prompt(model, text)
    return attention_view.prompt_view(model, batch)


@st.cache_data(max_entries=64, show_spinner=False)
def cached_top(model_name: str, source: str, task: str, k: int, seed: int, text: str):
    model = ui.get_model(model_name)
    batch = prompting.task_prompt(model, task, k, seed) if source == "task" else prompting.parse_prompt(model, text)
    return attention_view.top_predictions(model, batch, 5)


def set_head(layer: int, head: int) -> None:
    st.session_state["ex_layer"] = layer
    st.session_state["ex_head"] = head


st.title("Attention explorer")
goto = st.session_state.pop("explorer_goto", None)  # set by the head-scan page
if goto is not None:
    st.session_state["explorer_model_goto"] = goto["model"]
    st.session_state["ex_pending_head"] = (goto["layer"], goto["head"])

c1, c2 = st.columns([2, 3])
with c1:
    model_name = ui.model_picker("explorer_model")
model = ui.load_or_error(model_name)
if model is None:
    st.stop()
info = model_info.model_summary(model, model_name)
with c2:
    st.caption(f"{info['kind']} model · {info['n_layers']} layers × {info['n_heads']} heads · "
               f"context {info['n_ctx']} · vocabulary {info['d_vocab']}")
if info["kind"] == "vector":
    st.info("This model reads real vectors, not tokens: there is no token prompt to explore. "
            "See the ICL vs GD page for it.")
    st.stop()

tasks = prompting.available_tasks(model)
src_options = (["Task", "Typed prompt"] if tasks else ["Typed prompt"])
source = st.radio("Prompt", src_options, horizontal=True, key="ex_source")
task, k, seed, text = "", 0, 0, ""
if source == "Task":
    t1, t2, t3 = st.columns(3)
    task = ui.task_picker(t1, tasks, "ex_task", info["kind"] == "text")
    if task is None:
        st.stop()
    k_max = ui.max_k(model_name, task)
    if st.session_state.get("ex_k", 0) > k_max:  # a model or task with a shorter context
        st.session_state["ex_k"] = k_max
    k = int(t2.number_input("k (demonstrations)", min_value=0, max_value=k_max, value=min(2, k_max), step=1,
                            key="ex_k", help=f"at most {k_max}: longer prompts do not fit the model's context "
                                             f"({info['n_ctx']} tokens)"))
    seed = int(t3.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="ex_seed"))
else:
    if info["kind"] == "text":
        placeholder = "great movie: positive\nawful plot: negative\nloved it:"
        hint = "One demonstration per line as `input: label` (label = one token); the last line ends with `:`."
    else:
        placeholder = "3 17 42 | 8 21 5 | 3 17"
        hint = ("Token ids (or the model's symbols) separated by spaces; `|` separates demonstrations. "
                "In a demonstration the last token is the label, the one before it the forerunner.")
    text = st.text_area("Prompt", key="ex_text", placeholder=placeholder, help=hint, height=90)
    st.caption(hint)
    if not text.strip():
        st.info("Type a prompt above.")
        st.stop()

try:
    with st.spinner("Running the model…"):
        view = cached_view(model_name, "task" if source == "Task" else "text", task, k, seed, text)
except ui.EXPECTED_ERRORS as err:
    ui.show_error(err, "cannot build this prompt")
    st.stop()

st.subheader("Prompt")
st.html(attention_view.token_strip_html(view.labels, view.roles, highlight=view.readout))
if view.target >= 0:
    st.caption(f"{len(view.tokens)} tokens · read-out at position {view.readout} · "
               f"target token: {model_info.token_labels(model, [view.target])[0]!r}")
top = ui.guarded(lambda: cached_top(model_name, "task" if source == "Task" else "text", task, k, seed, text),
                 "cannot read the prediction")
if top is not None:
    st.subheader("Prediction at the read-out")
    best = top.iloc[0]
    st.caption(f"The model's top {len(top)} next tokens at position {view.readout} (softmax over the whole "
               f"vocabulary); its prediction: {best['token']!r} at {best['probability']:.3f}"
               + ("" if view.target < 0 else (" = the target" if bool(best["target"]) else " ≠ the target")))
    st.dataframe(top, hide_index=True, key="ex_top", column_config={
        "probability": st.column_config.ProgressColumn("probability", format="%.3f", min_value=0.0, max_value=1.0)})

# ---------------------------------------------------------------- head picking
L, H = view.n_layers, view.n_heads
pending = st.session_state.pop("ex_pending_head", None)
if pending is not None and pending[0] < L and pending[1] < H:
    set_head(*pending)
if st.session_state.get("ex_layer", 0) >= L or st.session_state.get("ex_head", 0) >= H:
    set_head(0, 0)
st.session_state.setdefault("ex_layer", 0)
st.session_state.setdefault("ex_head", 0)

st.subheader("Heads")
g1, g2 = st.columns([1, 2])
with g1:
    summary = st.selectbox("Colour heads by", list(attention_view.HEAD_SUMMARIES), key="ex_summary")
    s1, s2 = st.columns(2)
    s1.selectbox("Layer", list(range(L)), key="ex_layer")
    s2.selectbox("Head", list(range(H)), key="ex_head")
layer, head = int(st.session_state["ex_layer"]), int(st.session_state["ex_head"])
values = attention_view.HEAD_SUMMARIES[summary](view)
with g2:
    st.plotly_chart(attention_view.layer_head_heatmap(values, f"{summary} (layer × head)", (layer, head)),
                    width="stretch", key="ex_grid_fig")
if L * H <= 96:
    st.caption("Pick a head:")
    for l in range(L):
        cols = st.columns(H)
        for h in range(H):
            cols[h].button(f"L{l}H{h}", key=f"ex_btn_{l}_{h}", on_click=set_head, args=(l, h),
                           type="primary" if (l, h) == (layer, head) else "secondary",
                           width="stretch")

# ---------------------------------------------------------------- selected head
st.subheader(f"Head L{layer}H{head}")
m1, m2, m3 = st.columns(3)
m1.metric("read-out → labels", f"{attention_view.role_mass(view, 'label')[layer, head]:.4f}")
m2.metric("read-out → forerunners", f"{attention_view.role_mass(view, 'forerunner')[layer, head]:.4f}")
m3.metric("previous-token (this prompt)", f"{attention_view.previous_token_mass(view)[layer, head]:.4f}")
f1, f2 = st.columns([3, 2])
with f1:
    st.plotly_chart(attention_view.attention_heatmap(view, layer, head), width="stretch", key="ex_pattern_fig")
with f2:
    st.plotly_chart(attention_view.readout_bar(view, layer, head), width="stretch", key="ex_readout_fig")
