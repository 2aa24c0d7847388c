"""ICL Workbench: the Streamlit app's entry point (``iclwb app [--results DIR]``).

Pages live in ``app/views`` (not ``app/pages``: a folder of that name beside the main script
makes Streamlit serve its legacy file-name navigation on a first visit to a page's URL, which
skips this file). This file reads the results folder (``--results DIR`` after ``--``, else the
environment variable ``ICLWB_RESULTS`` that ``iclwb app`` also sets), sets shared session
defaults, and builds the navigation; it runs before every page, whatever URL a session opens
first. All numbers come from the ``iclwb_app`` package and the layers below.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent
VIEWS = HERE / "views"


def _cli_results() -> str:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--results", default=None)
    args, _ = p.parse_known_args(sys.argv[1:])
    return args.results or os.environ.get("ICLWB_RESULTS", "results/demo")


st.set_page_config(page_title="ICL Workbench", page_icon=":material/biotech:", layout="wide")
st.session_state.setdefault("results_dir", _cli_results())
st.session_state.setdefault("results_root", st.session_state["results_dir"])  # pages read only below it

PAGES = [
    st.Page(str(VIEWS / "1_explorer.py"), title="Attention explorer", icon=":material/search:",
            url_path="explorer", default=True),
    st.Page(str(VIEWS / "2_head_scan.py"), title="Head scan", icon=":material/grid_view:", url_path="head_scan"),
    st.Page(str(VIEWS / "3_circuit.py"), title="Circuit", icon=":material/account_tree:", url_path="circuit"),
    st.Page(str(VIEWS / "4_icl_vs_gd.py"), title="ICL vs GD", icon=":material/show_chart:", url_path="icl_vs_gd"),
    st.Page(str(VIEWS / "5_results.py"), title="Results", icon=":material/table_view:", url_path="results"),
    st.Page(str(VIEWS / "6_ICL_Vectors.py"), title="ICL vectors", icon=":material/north_east:",
            url_path="icl_vectors"),
    st.Page(str(VIEWS / "7_training_dynamics.py"), title="Training dynamics",
            icon=":material/timeline:", url_path="training_dynamics"),
]
st.navigation(PAGES).run()
