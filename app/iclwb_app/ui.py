"""UI helpers shared by the pages: cached model loading, model picker, error display.

Imported by the pages as ``iclwb_ui`` (their folder's parent is put on ``sys.path``); nothing
outside ``app/`` imports it. No analysis logic lives here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import streamlit as st

from experiments.models.loading import builtin_names as names
from experiments.models.loading import load_model
from iclwb_app import results_view
from iclwb_app.results_db import ResultsDB

OTHER = "Other (name or folder)…"
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, OSError)


@st.cache_resource(max_entries=3, show_spinner=False)
def get_model(name: str) -> Any:
    """The model ``name`` (zoo name, alias, HF directory or hub name), loaded once per process."""

    return load_model(name)


def builtin_names() -> list[str]:

    return names()


def show_error(err: BaseException, what: str = "") -> None:
    """A clear message on the page instead of a traceback."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{err}", icon=":material/error:")


def model_picker(key: str, default: str = "induction-2l", label: str = "Model") -> str:
    """A select box of the built-in models plus a free field for any loadable name or folder."""
    names = builtin_names()
    options = names + [OTHER]
    pending = st.session_state.pop(f"{key}_goto", None)
    if pending is not None:
        if pending in names:
            st.session_state[f"{key}_select"] = pending
        else:
            st.session_state[f"{key}_select"] = OTHER
            st.session_state[f"{key}_other"] = pending
    st.session_state.setdefault(f"{key}_select", default if default in names else names[0])
    choice = st.selectbox(label, options, key=f"{key}_select",
                          help="A built-in zoo model, or any Hugging Face name or local folder")
    if choice == OTHER:
        return st.text_input("Model name or folder", key=f"{key}_other",
                             placeholder="gpt2, org/name or /path/to/checkpoint").strip()
    return choice


TASK_FILE = "Your own task file (file:PATH)…"


def task_picker(container: Any, tasks: list[str], key: str, text_model: bool) -> str | None:
    """A select box of ``tasks`` plus, for text models, a field for a JSONL/CSV task file
    (``file:PATH``). Returns the task name, or None after showing why the file cannot be used."""
    options = tasks + ([TASK_FILE] if text_model else [])
    choice = container.selectbox("Task", options, key=key)
    if choice != TASK_FILE:
        return choice
    path = st.text_input("Task file (.jsonl or .csv)", key=f"{key}_file",
                         placeholder="/path/to/my_task.jsonl",
                         help="JSONL lines {\"input\": ..., \"output\": ...} or a CSV with columns "
                              "input,output (or input,class); see experiments/tasks/taskfile.py").strip()
    if not path:
        st.info("Type the path of a .jsonl or .csv task file.")
        return None
    try:
        return results_view.task_file(path)
    except ValueError as err:
        show_error(err, "task file")
        return None


def load_or_error(name: str) -> Any | None:
    """The cached model, or None after showing why it could not load."""
    if not name:
        st.info("Type a model name or folder to load.")
        return None
    try:
        with st.spinner(f"Loading {name}…"):
            return get_model(name)
    except EXPECTED_ERRORS as err:
        show_error(err, f"cannot load model {name!r}")
    except Exception as err:  # any other load failure is still the user's input, not a crash
        show_error(err, f"cannot load model {name!r} ({type(err).__name__})")
    return None


def wait_for_run(state_key: str, run_key: Any, needed: bool, label: str, button_key: str,
                 note: str | None = None) -> None:
    """Stop the page until the user presses Run, when ``needed`` and ``run_key`` has not run yet.

    Expensive computations (large models, fine-tuning) wait for a click; cheap ones and inputs
    already computed in this session go ahead. Call ``mark_run`` once the computation succeeded.
    """
    if needed and run_key not in st.session_state.setdefault(state_key, set()):
        if note:
            st.info(note)
        if not st.button(label, type="primary", key=button_key):
            st.stop()


def mark_run(state_key: str, run_key: Any) -> None:
    """Remember that ``run_key`` has run, so ``wait_for_run`` lets it through from now on."""
    st.session_state.setdefault(state_key, set()).add(run_key)


def guarded(fn: Callable[[], Any], what: str) -> Any | None:
    """Run ``fn``; show expected errors on the page and return None."""
    try:
        return fn()
    except EXPECTED_ERRORS as err:
        show_error(err, what)
    return None


def results_root() -> str:
    """The results folder given at launch: the pages read it and folders inside it only."""
    return st.session_state.get("results_root", st.session_state.get("results_dir", ""))


def load_results(folder: str) -> Any | None:
    """The results under ``folder`` (cached on its files), or None after showing why not; a
    warning names damaged files that were skipped."""
    try:
        df = _cached_results(folder, results_root(), results_view.results_signature(folder, results_root()))
    except EXPECTED_ERRORS as err:
        show_error(err, "no results to show")
        return None
    note = results_view.damaged_note(df)
    if note:
        st.warning(note, icon=":material/warning:")
    return df


@st.cache_data(max_entries=16, show_spinner=False)
def _cached_results(folder: str, root: str, signature: tuple) -> Any:
    return results_view.load_results(folder, root)


def results_db(folder: str) -> ResultsDB | None:
    """The rows under ``folder`` in DuckDB (``iclwb_app.results_db``), loaded once per state of
    its files and shared by every session; None after showing why not. A warning names damaged
    files that were left out."""
    try:
        db = _cached_db(folder, results_root(), results_view.results_signature(folder, results_root()))
    except EXPECTED_ERRORS as err:
        show_error(err, "no results to show")
        return None
    note = results_view.damaged_note(db)
    if note:
        st.warning(note, icon=":material/warning:")
    return db


@st.cache_resource(max_entries=4, show_spinner=False)
def _cached_db(folder: str, root: str, signature: tuple) -> ResultsDB:
    return ResultsDB.open(folder, root)


def module_available(name: str) -> bool:

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


__all__ = ["get_model", "model_picker", "load_or_error", "show_error", "guarded",
           "load_results", "results_db", "results_root",
           "wait_for_run", "mark_run",
           "module_available", "builtin_names"]
