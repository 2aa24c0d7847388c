"""Read, filter and plot a results folder written by sweeps (read only below the launch folder)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow.parquet as pq

from experiments import tasks
from experiments.runs.store import ResultsStore
from iclwb_app.model_info import AppInputError
from probes import stats

MAX_RESULT_FILES = 20_000
MAX_RESULT_DIRS = 2_000
"""Bounds on the scan of a results folder (Parquet files found, folders walked)."""


def results_folder(folder: str | Path, root: str | Path | None = None) -> Path:
    """``folder`` resolved, when the app may read it: ``root`` (the results folder given at launch)
    or a folder inside it. Refused paths get the same message whether or not they exist."""
    if not str(folder).strip():
        raise AppInputError("no results folder given; run a sweep (`iclwb sweep run CONFIG`) or "
                            "`iclwb demo`, then pass its folder: `iclwb app --results DIR`")
    path = Path(folder).expanduser().resolve()
    if root is not None:
        top = Path(root).expanduser().resolve()
        if path != top and top not in path.parents:
            raise AppInputError(f"the app reads only the results folder it was started with ({top}) "
                                f"and folders inside it; to browse another, restart it with "
                                f"`iclwb app --results DIR`")
    return path


def result_files(path: Path) -> list[Path]:
    """The Parquet files under ``path``: a store's ``units/*.parquet``, else a bounded walk
    (at most ``MAX_RESULT_FILES`` files in ``MAX_RESULT_DIRS`` folders, symlinks not followed)."""

    if (path / "units").is_dir():
        units = sorted((path / "units").glob("*.parquet"))
        if len(units) > MAX_RESULT_FILES:
            raise AppInputError(f"{path} holds {len(units)} result files, more than the app reads "
                                f"({MAX_RESULT_FILES}); query it with `iclwb sweep results --sql`")
        return units
    files: list[Path] = []
    for n_dirs, (d, subdirs, names) in enumerate(os.walk(path), start=1):
        subdirs.sort()
        files += [Path(d) / f for f in sorted(names) if f.endswith(".parquet")]
        if n_dirs > MAX_RESULT_DIRS or len(files) > MAX_RESULT_FILES:
            raise AppInputError(f"{path} has more than {MAX_RESULT_DIRS} folders or {MAX_RESULT_FILES} "
                                f"Parquet files; pick the results folder of one study (a folder with units/)")
    return files


def results_signature(folder: str | Path, root: str | Path | None = None) -> tuple:
    """Changes whenever a result file is added or rewritten (a cache key); () when the folder
    cannot be read (``load_results`` then says why)."""
    try:
        path = results_folder(folder, root)
        if not path.is_dir():
            return ()
        return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in result_files(path))
    except (AppInputError, OSError):
        return ()


def damaged_parquet(files: Sequence[Path]) -> list[Path]:
    """The files that are not readable Parquet (cut short, overwritten, not Parquet at all)."""

    bad = []
    for f in files:
        try:
            pq.read_metadata(f)
        except Exception:  # pyarrow raises several types for a damaged file
            bad.append(f)
    return bad


def load_results(folder: str | Path, root: str | Path | None = None) -> pd.DataFrame:
    """Every result row under ``folder`` (Parquet files written by sweeps) as one DataFrame.

    With ``root`` only that folder and folders inside it may be read (``results_folder``). A sweep
    results store (``units/*.parquet``) is read with ``ResultsStore.frame``; any other folder of
    Parquet files is read with DuckDB (columns unioned by name). Damaged files are skipped and
    named in ``df.attrs["damaged"]``. Raises AppInputError when the folder is missing or refused,
    or holds no readable results.
    """
    path = results_folder(folder, root)
    if not path.is_dir():
        raise AppInputError(f"results folder {str(path)!r} does not exist; run `iclwb demo` or a "
                            f"sweep first, or pass the right folder with `iclwb app --results DIR`")
    files = result_files(path)
    if not files and (path / "units").is_dir():
        raise AppInputError(f"results folder {str(path)!r} holds no result rows yet; run "
                            f"`iclwb demo` or `iclwb sweep run CONFIG` to fill it")
    if not files:
        raise AppInputError(f"results folder {str(path)!r} holds no Parquet result files; run "
                            f"`iclwb demo` or `iclwb sweep run CONFIG` to fill it")

    try:
        if (path / "units").is_dir():  # a results store checks its units and leaves out damaged ones
            df = _store_read(path)
            damaged = [f"units/{key}.parquet" for key in df.attrs.get("iclwb.skipped", {})]
        else:
            bad = damaged_parquet(files)
            damaged = [str(f.relative_to(path)) for f in bad]
            good = [str(f) for f in files if f not in bad]
            df = pd.DataFrame()
            if good:
                con = duckdb.connect()
                try:
                    df = con.execute("SELECT * FROM read_parquet(?, union_by_name=true)", [good]).df()
                finally:
                    con.close()
    except (duckdb.Error, OSError) as err:
        msg = " ".join(str(err).split())[:200]
        raise AppInputError(f"cannot read the results in {str(path)!r}: {msg}; the folder holds "
                            f"Parquet files that are not sweep results, or damaged ones: recompute "
                            f"or remove them") from None
    if df.empty and damaged:
        raise AppInputError(f"every result file in {str(path)!r} is damaged or not Parquet "
                            f"({', '.join(damaged[:3])}); recompute them (`iclwb sweep run CONFIG`) "
                            f"or remove them")
    if df.empty:
        raise AppInputError(f"results folder {str(path)!r} holds no result rows yet")
    df.attrs["damaged"] = damaged
    return df


def superseded_note(df: Any) -> str | None:
    """A one-line note when the store's readers left out superseded runs (None if none): the
    page shows the current unit of each cell only (``experiments.runs.cells``)."""
    sup = df.attrs.get("iclwb.superseded") or {}
    stale = df.attrs.get("iclwb.stale") or {}
    parts = []
    if sup:
        parts.append(f"{len(sup)} superseded run{'s' if len(sup) > 1 else ''} of the same cells left out "
                     "(each cell shows its current unit: the running code's, with the most prompts, the latest; "
                     "`iclwb sweep results --all-runs` lists them)")
    if stale:
        parts.append(f"{len(stale)} cell{'s are' if len(stale) > 1 else ' is'} shown from stale units "
                     "(computed by older code): `iclwb sweep run CONFIG` recomputes them")
    return "; ".join(parts) or None


def damaged_note(df: Any) -> str | None:
    """A one-line warning naming the damaged files ``load_results`` skipped (None if none)."""
    bad = df.attrs.get("damaged") or []
    if not bad:
        return None
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"skipped {len(bad)} damaged result file{'s' if len(bad) > 1 else ''} "
            f"({', '.join(bad[:3])}{more}); `iclwb sweep run CONFIG` recomputes them")


def _store_read(path: Path) -> pd.DataFrame:
    """The rows of the sound units of a sweep results store (``experiments.runs.store``); the
    damaged ones it left out are in ``df.attrs["iclwb.skipped"]``."""

    return ResultsStore(path, create=False).frame()


FILTER_COLUMNS: tuple[str, ...] = ("model", "task", "k", "analysis")


def filter_options(df: pd.DataFrame) -> dict[str, list[Any]]:
    """The values a user can filter each of model, task, k, analysis by (columns present only)."""
    out = {}
    for col in FILTER_COLUMNS:
        if col in df.columns:
            out[col] = sorted(df[col].dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
    return out


def filter_results(df: pd.DataFrame, **selected: Sequence[Any] | None) -> pd.DataFrame:
    """Rows whose column values are in the selected lists (an empty or None list keeps all)."""
    mask = pd.Series(True, index=df.index)
    for col, values in selected.items():
        if values and col in df.columns:
            mask &= df[col].isin(list(values))
    return df[mask]


def metric_names(df: pd.DataFrame) -> list[str]:
    """Metrics a user can plot: the ``metric`` column's values (tidy) or the numeric columns."""
    if "metric" in df.columns and "value" in df.columns:
        return sorted(df["metric"].dropna().astype(str).unique().tolist())
    skip = set(FILTER_COLUMNS) | {"seed", "layer", "head", "wall_time", "wall_s"}
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])]


def metric_series(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows of one metric with its value in a ``value`` column."""
    if "metric" in df.columns and "value" in df.columns:
        sub = df[df["metric"].astype(str) == metric].copy()
    elif metric in df.columns:
        sub = df.copy()
        sub["value"] = sub[metric]
    else:
        raise AppInputError(f"no metric {metric!r} in these results; metrics: {metric_names(df)}")
    sub["value"] = pd.to_numeric(sub["value"], errors="coerce")
    return sub.dropna(subset=["value"])


CI_CAPTION = "error bars: 95% CI over prompts (seeds pooled; over seeds where a table has no per-prompt rows)"
"""What the results page's error bars are (its caption)."""


def ci_error(part: pd.DataFrame) -> dict:
    return stats.error_bars(part["value"], part["ci_low"], part["ci_high"])


def metric_summary(df: pd.DataFrame, metric: str, x: str = "k", color: str | None = "model",
                   level: float = stats.LEVEL) -> pd.DataFrame:
    """Mean of ``metric`` per (``color``, ``x``) with its ``level`` CI
    (``probes.stats.summarize_rows``: over prompts, seeds pooled, where the rows have per-prompt
    values; else over seeds): the numbers ``metric_figure`` draws and the page's table shows."""
    sub = metric_series(df, metric)
    if x not in sub.columns:
        raise AppInputError(f"cannot plot against {x!r}: no such column")
    groups = [color] if color and color in sub.columns and color != x else []
    return stats.summarize_rows(sub, groups + [x], level).sort_values(groups + [x], kind="stable").reset_index(drop=True)


def summary_figure(agg: pd.DataFrame, metric: str, x: str = "k", color: str | None = "model",
                   level: float = stats.LEVEL) -> go.Figure:
    """``metric_summary``'s table drawn: one line per ``color`` group with the CI as error bars; a
    bar chart when ``x`` is categorical."""
    groups = [color] if color and color in agg.columns and color != x else []
    fig = go.Figure()
    numeric_x = pd.api.types.is_numeric_dtype(agg[x])
    for key, part in (agg.groupby(groups, dropna=False) if groups else [("all", agg)]):
        name = str(key[0] if isinstance(key, tuple) else key)
        part = part.sort_values(x)
        kw = dict(x=part[x], y=part["value"], name=name, error_y=ci_error(part),
                  customdata=np.stack([part["n"], part["ci_low"], part["ci_high"]], axis=-1),
                  hovertemplate=f"{x}=%{{x}}<br>{metric}=%{{y:.4f}} [%{{customdata[1]:.4f}}, "
                  "%{customdata[2]:.4f}]<br>n=%{customdata[0]}<extra>" + name + "</extra>")
        fig.add_trace(go.Scatter(mode="lines+markers", **kw) if numeric_x else go.Bar(**kw))
    fig.update_layout(title=f"{metric} by {x} (error bars: {level:.0%} CI)", xaxis_title=x, yaxis_title=metric,
                      height=400, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def metric_figure(df: pd.DataFrame, metric: str, x: str = "k", color: str | None = "model",
                  level: float = stats.LEVEL) -> go.Figure:
    """Mean of ``metric`` against ``x`` with its ``level`` CI as error bars
    (``metric_summary``), one line per ``color`` group; a bar chart when ``x`` is categorical."""
    return summary_figure(metric_summary(df, metric, x, color, level), metric, x, color, level)


def metric_ci_table(df: pd.DataFrame, metric: str, by: Sequence[str], level: float = stats.LEVEL) -> pd.DataFrame:
    """The table beside ``metric_figure``: ``by`` + n, value, ci_low, ci_high."""
    sub = metric_series(df, metric)
    return stats.summarize_rows(sub, [b for b in by if b in sub.columns], level)


def results_csv(df: pd.DataFrame) -> bytes:
    """The table as UTF-8 CSV bytes (what the download button serves)."""
    return df.to_csv(index=False).encode("utf-8")


def task_file(path: str) -> str:
    """``file:PATH`` for a user's JSONL/CSV task file, or an AppInputError naming the line and
    problem (``experiments.tasks.taskfile``)."""
    name = path if path.startswith("file:") else f"file:{path}"
    why = tasks.task_problem(name)
    if why:
        raise AppInputError(why)
    return name
