"""Head scan: every head score of one model as layer x head heatmaps and a sortable table."""

from __future__ import annotations

import streamlit as st

from experiments.studies.scan import head_scan
from iclwb_app import attention_view, model_info, scan_view, stats_view, ui


@st.cache_data(max_entries=32, show_spinner=False)
def cached_scan(model_name: str, seed: int):

    scan = head_scan(ui.get_model(model_name), seed=seed)
    return scan_view.scan_frame(scan), stats_view.head_scan_verdicts(scan)


st.title("Head scan")
st.caption("Layer × head tables of every head score in probes/ (previous-token, induction, prefix "
           "matching, copying, n-gram, ...), computed on the prompts each score defines.")
c1, c2 = st.columns([3, 1])
with c1:
    model_name = ui.model_picker("scan_model")
seed = int(c2.number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key="scan_seed"))
model = ui.load_or_error(model_name)
if model is None:
    st.stop()
if model_info.model_kind(model) == "vector":
    st.info("This model reads real vectors, not tokens: token head scores do not apply to it.")
    st.stop()

key = (model_name, seed)
small = model_info.model_summary(model)["n_layers"] * model_info.model_summary(model)["n_heads"] <= 64
ui.wait_for_run("scan_requested", key, not small, "Run head scan", "scan_run",
                note="This model has many heads; the scan takes a while.")
try:
    with st.status(f"Scanning every head of {model_name}…", expanded=False) as status:
        df, verdicts = cached_scan(model_name, seed)
        status.update(label=f"Head scan of {model_name}: {df['score'].nunique()} scores", state="complete")
except ui.EXPECTED_ERRORS as err:
    ui.show_error(err, "head scan failed")
    st.stop()
ui.mark_run("scan_requested", key)

scores = list(dict.fromkeys(df["score"]))
st.subheader("Heatmaps")
cols = st.columns(min(3, len(scores)))
for i, score in enumerate(scores):
    with cols[i % len(cols)]:
        st.plotly_chart(attention_view.layer_head_heatmap(scan_view.scan_matrix(df, score), score), width="stretch",
                        key=f"scan_fig_{score}")

st.subheader("Which heads pass their test")
st.caption("Each head's score over prompts with its 95% interval, against the same score on sequences where "
           "the mechanism cannot apply (the null); Benjamini-Hochberg q over every head and score of this scan.")
if verdicts.empty:
    st.info("No score of this scan has a null to test against.")
else:
    st.markdown("\n".join(f"- **{r.metric} L{r.layer}H{r['head']}**: {r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] "
                          f"vs null {r.null_value:.3f}: {r.verdict} (q={r.q_value:.2g}, n={int(r.n)})"
                          for _, r in verdicts.iterrows()))
    st.dataframe(stats_view.stats_view(verdicts), hide_index=True, width="stretch", key="scan_verdicts")

st.subheader("Top heads")
t1, t2 = st.columns([1, 1])
sort_by = t1.selectbox("Sort by", scores, key="scan_sort")
n_top = int(t2.number_input("Rows", min_value=1, max_value=len(df) // max(1, len(scores)),
                            value=min(10, len(df) // max(1, len(scores))), key="scan_rows"))
table = scan_view.top_heads(df, sort_by, n_top)
event = st.dataframe(table, hide_index=True, width="stretch", on_select="rerun",
                     selection_mode="single-row", key="scan_table",
                     column_config={s: st.column_config.NumberColumn(format="%.3f") for s in scores})
rows = list(getattr(getattr(event, "selection", None), "rows", []) or [])
head_ids = table["head_id"].tolist()
if rows and rows[0] < len(head_ids):
    st.session_state["scan_open_head"] = head_ids[rows[0]]
if st.session_state.get("scan_open_head") not in head_ids:
    st.session_state.pop("scan_open_head", None)
o1, o2 = st.columns([1, 1])
head_id = o1.selectbox("Head to explore (or click a table row)", head_ids, key="scan_open_head")
if o2.button(f"Open {head_id} in the explorer", key="scan_open", type="primary"):
    layer, head = scan_view.parse_head_id(head_id)
    st.session_state["explorer_goto"] = {"model": model_name, "layer": layer, "head": head}
    st.switch_page("views/1_explorer.py")
