"""Results: browse a results folder written by sweeps (Parquet, queried through DuckDB)."""

from __future__ import annotations

import streamlit as st

from iclwb_app import results_db, results_view, ui


@st.cache_data(max_entries=256, show_spinner=False)
def cached_summary(_db, folder: str, signature: tuple, selected: tuple, metric: str, x: str, colour: str | None):
    rows = _db.metric_rows(metric, [c for c in (colour, x) if c], **dict(selected))
    return results_view.metric_summary(rows, metric, x=x, color=colour)


st.title("Results")
root = ui.results_root()
folder = st.text_input("Results folder", value=st.session_state.get("results_dir", ""),
                       key="res_folder",
                       help=f"Written by `iclwb sweep run` or `iclwb demo`; {root} or a folder inside it")
with st.spinner("Reading results…"):
    db = ui.results_db(folder)
if db is None:
    st.stop()

st.caption(f"{db.n_rows} rows · {len(db.columns)} columns from {folder}")
if results_view.superseded_note(db):
    st.caption(results_view.superseded_note(db))
options = db.filter_options()
selected = {}
if options:
    cols = st.columns(len(options))
    for col, (name, values) in zip(cols, options.items()):
        selected[name] = col.multiselect(name, values, key=f"res_filter_{name}",
                                         placeholder="all")
n_rows = db.count(**selected)
if n_rows == 0:
    st.warning("No rows match these filters; clear one of them.")
    st.stop()

metrics = db.metric_names(**selected)
if metrics:
    p1, p2, p3 = st.columns(3)
    metric = p1.selectbox("Metric", metrics, key="res_metric")
    x_options = [c for c in ("k", "layer", "head", "seed", "model", "task", "analysis", "step")
                 if c in db.columns]
    x = p2.selectbox("Against", x_options or [db.columns[0]], key="res_x")
    colour_options = ["(none)"] + [c for c in ("model", "task", "analysis", "step", "k") if c in db.columns and c != x]
    colour = p3.selectbox("Colour by", colour_options, key="res_colour",
                          index=colour_options.index("model") if "model" in colour_options else 0)
    colour_col = None if colour == "(none)" else colour
    try:
        signature = results_view.results_signature(folder, root)
        key = tuple((k, tuple(v)) for k, v in selected.items() if v)
        agg = cached_summary(db, folder, signature, key, metric, x, colour_col)
        st.plotly_chart(results_view.summary_figure(agg, metric, x=x, color=colour_col), width="stretch",
                        key="res_fig")
        st.caption(results_view.CI_CAPTION)
        st.dataframe(agg, hide_index=True, width="stretch", key="res_ci_table")
    except ui.EXPECTED_ERRORS as err:
        ui.show_error(err, "cannot plot this metric")
else:
    st.info("These rows have no numeric metric to plot.")

shown = db.frame(limit=results_db.SHOWN_ROWS, **selected)
if n_rows > len(shown):
    st.caption(f"The first {len(shown)} of {n_rows} matching rows; the CSV download has all of them.")
st.dataframe(shown, hide_index=True, width="stretch", key="res_table")
st.download_button("Download CSV", lambda: db.csv(**selected), file_name="results.csv", mime="text/csv",
                   key="res_download")
