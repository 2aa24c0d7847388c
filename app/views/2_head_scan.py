"""Head scan: every head score of one model as layer x head heatmaps and a sortable table, from the
results folder's stored scan or a live one."""

from __future__ import annotations

import streamlit as st

from experiments.studies.scan import head_scan
from iclwb_app import attention_view, model_info, results_view, scan_view, stats_view, stored_view, ui


@st.cache_data(max_entries=32, show_spinner=False)
def cached_scan(model_name: str, seed: int):

    scan = head_scan(ui.get_model(model_name), seed=seed)
    return scan_view.scan_frame(scan), stats_view.head_scan_verdicts(scan)


@st.cache_data(max_entries=32, show_spinner=False)
def cached_stored_scan(_db, signature: tuple, model_name: str, seed: int):
    rows = _db.frame(analysis=["head_scan"], model=[model_name], seed=[seed])
    return stored_view.scan_frame(rows), stored_view.scan_verdicts(rows)


st.title("Head scan")
st.caption("Layer × head tables of every head score in probes/ (previous-token, induction, prefix "
           "matching, copying, n-gram, ...), computed on the prompts each score defines.")
source, db = ui.source_picker("scan_source", ["head_scan"])
if source == stored_view.STORED:
    if db is None or "analysis" not in db.columns or not db.count(analysis=["head_scan"]):
        st.info(f"{st.session_state.get('results_dir', '')} holds no head-scan units; run a sweep with the "
                "head_scan analysis (`iclwb study full`), or use a live run.")
        st.stop()
    if results_view.superseded_note(db):
        st.caption(results_view.superseded_note(db))
    c1, c2 = st.columns([3, 1])
    model_name = c1.selectbox("Model", db.distinct("model", analysis=["head_scan"]), key="scan_st_model")
    seed = int(c2.selectbox("Seed", db.distinct("seed", analysis=["head_scan"], model=[model_name]),
                            key="scan_st_seed"))
    signature = results_view.results_signature(st.session_state["results_dir"], ui.results_root())
    df, verdicts = cached_stored_scan(db, signature, model_name, seed)
    if df.empty:
        st.info(f"The stored head scan of {model_name} has no per-head scores.")
        st.stop()
    verdict_caption = ("The top 5 induction heads: each head's mean score over its prompts with its 95% interval, "
                       "against the same score on sequences whose second half is fresh (the null); "
                       "Benjamini-Hochberg q over the 5 heads: the numbers of the findings page.")
else:
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
    info = model_info.model_summary(model)
    n_heads = info["n_layers"] * info["n_heads"]
    key = (model_name, seed)
    ui.wait_for_run("scan_requested", key, n_heads > 64, "Run head scan", "scan_run",
                    note="This model has many heads; the scan takes a while.")
    try:
        df, verdicts = ui.run_with_eta(lambda: cached_scan(model_name, seed), f"Scanning every head of {model_name}…",
                                       "head_scan", n_heads, ui.stored_wall_time(db, "head_scan", model_name))
    except ui.EXPECTED_ERRORS as err:
        ui.show_error(err, "head scan failed")
        st.stop()
    ui.mark_run("scan_requested", key)
    verdict_caption = ("Each head's score over prompts with its 95% interval, against the same score on sequences "
                       "where the mechanism cannot apply (the null); Benjamini-Hochberg q over every head and score "
                       "of this scan.")

st.caption(f"Head scan of {model_name}: {df['score'].nunique()} scores")
scores = list(dict.fromkeys(df["score"]))
st.subheader("Heatmaps")
cols = st.columns(min(3, len(scores)))
for i, score in enumerate(scores):
    with cols[i % len(cols)]:
        st.plotly_chart(attention_view.layer_head_heatmap(scan_view.scan_matrix(df, score), score), width="stretch",
                        key=f"scan_fig_{score}")

st.subheader("Which heads pass their test")
st.caption(verdict_caption)
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
