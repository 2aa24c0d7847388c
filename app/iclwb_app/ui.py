"""UI helpers shared by the pages: cached model loading, model picker, error display.

Imported by the pages as ``iclwb_ui`` (their folder's parent is put on ``sys.path``); nothing
outside ``app/`` imports it. No analysis logic lives here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
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


@st.cache_data(max_entries=256, show_spinner=False)
def max_k(model_name: str, task: str, limit: int = 256) -> int:
    """The largest k whose ``task`` prompt fits ``model_name``'s context (``prompting.max_k``)."""
    from iclwb_app import prompting  # noqa: PLC0415

    return prompting.max_k(get_model(model_name), task, limit)


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


_SECONDS_PER_UNIT: dict[str, float] = {"head_scan": 0.45}
"""Per kind of run, seconds per unit of cost measured on its last run in this process (ETAs);
seeded with the head scan's measured rate on two cores (smollm2-135m: 115 s for 270 heads)."""


def stored_wall_time(db: ResultsDB | None, analysis: str, model: str) -> float | None:
    """The median wall time of the stored units of ``analysis`` on ``model`` (an ETA for the same
    run live), None when there are none."""
    if db is None or not {"analysis", "model", "wall_time_s", "unit_key"} <= set(db.columns):
        return None
    t = db.query("SELECT median(w) FROM (SELECT any_value(wall_time_s) AS w FROM rows WHERE analysis = ? "
                 "AND model = ? GROUP BY unit_key)", [analysis, model])
    v = t.iloc[0, 0] if len(t) else None
    return float(v) if v is not None and v == v and v > 0 else None


def eta_text(label: str, elapsed: float, expected: float | None, rest: float = 0.0) -> str:
    """The progress line: elapsed time and, when an estimate exists, about how long is left
    (``rest``: the expected time of the jobs still to come after this one)."""
    if expected is None or expected <= 0:
        return f"{label} {elapsed:.0f} s (no estimate yet: the first run of this kind)"
    return f"{label} {elapsed:.0f} s of about {expected:.0f} s; about {max(expected - elapsed, 0) + rest:.0f} s left"


def run_with_eta(fn: Callable[[], Any], label: str, kind: str, cost: float,
                 expected_s: float | None = None, done: float = 0.0, share: float = 1.0,
                 bar: Any = None) -> Any:
    """Run ``fn`` (in a thread carrying this session's script context) while a progress bar shows
    its elapsed time and ETA: ``expected_s``, else ``cost`` times the seconds per unit of cost
    that the last run of ``kind`` took. ``done``/``share`` place it within a longer run (a bar of
    several jobs); the measured rate is kept for the next ETA. Errors of ``fn`` are raised here."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx  # noqa: PLC0415

    rate = _SECONDS_PER_UNIT.get(kind)
    expected = expected_s if expected_s is not None else (rate * cost if rate else None)
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = fn()
        except BaseException as err:  # handed to the script thread
            result["error"] = err

    own = bar is None
    rest = expected * max(1.0 - done - share, 0.0) / share if expected and share > 0 else 0.0
    bar = bar if bar is not None else st.progress(0.0, text=eta_text(label, 0, expected, rest))
    thread = threading.Thread(target=work, daemon=True)
    add_script_run_ctx(thread, get_script_run_ctx())
    t0 = time.perf_counter()
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
        elapsed = time.perf_counter() - t0
        frac = min(elapsed / expected, 0.99) if expected else 0.0
        bar.progress(min(done + share * frac, 0.99), text=eta_text(label, elapsed, expected, rest))
    elapsed = time.perf_counter() - t0
    if "error" in result:
        if own:
            bar.empty()
        raise result["error"]
    if cost > 0 and elapsed > 0.5:  # a cache hit says nothing about the cost
        _SECONDS_PER_UNIT[kind] = elapsed / cost
    if own:
        bar.empty()
    return result.get("value")


WIDE_TEXT = ("verdict", "test", "condition", "control", "ablation", "window", "method", "task", "model")


def stats_table(df: Any, key: str) -> Any:
    """A statistics table that scrolls sideways rather than squeezing its text: the verdict and
    other text columns get wide fixed widths, numbers three decimals."""
    config = {c: st.column_config.TextColumn(c, width="large" if c == "verdict" else "medium")
              for c in WIDE_TEXT if c in df.columns}
    for c in df.columns:
        if c not in config and str(df[c].dtype).startswith("float"):
            config[c] = st.column_config.NumberColumn(c, format="%.4g")
    return st.dataframe(df, hide_index=True, width="stretch", key=key, column_config=config)


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


def launch_db() -> ResultsDB | None:
    """The results folder given at launch in DuckDB, or None (quietly) when it cannot be read."""
    folder = st.session_state.get("results_dir", "")
    if not str(folder).strip():
        return None
    try:
        return _cached_db(folder, results_root(), results_view.results_signature(folder, results_root()))
    except EXPECTED_ERRORS:
        return None


def analysis_filter(db: ResultsDB, analyses: Sequence[str]) -> dict[str, list[str]]:
    """The filter on ``analysis`` (none for a folder of Parquet files without that column)."""
    return {"analysis": list(analyses)} if "analysis" in db.columns else {}


def source_picker(key: str, analyses: Sequence[str]) -> tuple[str, ResultsDB | None]:
    """Live run or Stored sweep: Stored sweep is the default when the launch results folder holds
    units of ``analyses``. Returns the choice and the folder's rows (None if unreadable)."""
    from iclwb_app import stored_view  # noqa: PLC0415 (imports the findings page's code)

    db = launch_db()
    has = db is not None and "analysis" in db.columns and db.count(analysis=list(analyses)) > 0
    choice = st.radio("Source", stored_view.SOURCES, horizontal=True, key=key,
                      index=stored_view.SOURCES.index(stored_view.STORED if has else stored_view.LIVE),
                      help="Stored sweep: the current units of the results folder (as the findings page "
                           "shows them); Live run: compute on this machine now")
    note = results_view.damaged_note(db) if db is not None and choice == stored_view.STORED else None
    if note:
        st.warning(note, icon=":material/warning:")
    return choice, db


def module_available(name: str) -> bool:

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


__all__ = ["get_model", "model_picker", "load_or_error", "show_error", "guarded",
           "load_results", "results_db", "results_root",
           "wait_for_run", "mark_run", "run_with_eta", "source_picker", "stats_table", "launch_db",
           "module_available", "builtin_names"]
