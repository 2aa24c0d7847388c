"""Results: browse a results folder written by sweeps (Parquet, read through DuckDB)."""

from __future__ import annotations

import streamlit as st

from iclwb_app import results_view, ui

st.title("Results")
root = ui.results_root()
folder = st.text_input("Results folder", value=st.session_state.get("results_dir", ""),
                       key="res_folder",
                       help=f"Written by `iclwb sweep run` or `iclwb demo`; {root} or a folder inside it")
with st.spinner("Reading results…"):
    df = ui.load_results(folder)
if df is None:
    st.stop()

st.caption(f"{len(df)} rows · {len(df.columns)} columns from {folder}")
if results_view.superseded_note(df):
    st.caption(results_view.superseded_note(df))
options = results_view.filter_options(df)
selected = {}
if options:
    cols = st.columns(len(options))
    for col, (name, values) in zip(cols, options.items()):
        selected[name] = col.multiselect(name, values, key=f"res_filter_{name}",
                                         placeholder="all")
view = results_view.filter_results(df, **selected)
if view.empty:
    st.warning("No rows match these filters; clear one of them.")
    st.stop()

metrics = results_view.metric_names(view)
if metrics:
    p1, p2, p3 = st.columns(3)
    metric = p1.selectbox("Metric", metrics, key="res_metric")
    x_options = [c for c in ("k", "layer", "head", "seed", "model", "task", "analysis", "step")
                 if c in view.columns]
    x = p2.selectbox("Against", x_options or [view.columns[0]], key="res_x")
    colour_options = ["(none)"] + [c for c in ("model", "task", "analysis", "step", "k") if c in view.columns and c != x]
    colour = p3.selectbox("Colour by", colour_options, key="res_colour",
                          index=colour_options.index("model") if "model" in colour_options else 0)
    try:
        fig = results_view.metric_figure(view, metric, x=x, color=None if colour == "(none)" else colour)
        st.plotly_chart(fig, width="stretch", key="res_fig")
        st.caption(results_view.CI_CAPTION)
        by = [c for c in (None if colour == "(none)" else colour, x) if c]
        st.dataframe(results_view.metric_ci_table(view, metric, by), hide_index=True, width="stretch", key="res_ci_table")
    except ui.EXPECTED_ERRORS as err:
        ui.show_error(err, "cannot plot this metric")
else:
    st.info("These rows have no numeric metric to plot.")

st.dataframe(view, hide_index=True, width="stretch", key="res_table")
st.download_button("Download CSV", results_view.results_csv(view), file_name="results.csv", mime="text/csv",
                   key="res_download")
