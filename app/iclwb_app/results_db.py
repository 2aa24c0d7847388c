"""A results folder loaded once into an in-memory DuckDB table, queried with the filters and
aggregations pushed into SQL (the Results, Circuit and ICL-vs-GD pages).

``ResultsStore.frame()`` on ``results/full`` hands ~290k rows x 64 columns to pandas (about 12 s
on two cores), and a page that filtered that frame and showed it paid that again on every
interaction. Here the current unit of each cell (the store's DuckDB view ``current``) is copied
once into a DuckDB table; every interaction then asks for what it shows: the distinct values of a
filter, a row count, the rows of one metric with the columns a figure needs, the first rows of the
table. A folder of Parquet files that is not a store is read the same way (columns unioned by
name). One ``ResultsDB`` serves every session (each query opens its own cursor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from experiments.runs.store import ResultsStore
from iclwb_app import results_view
from iclwb_app.model_info import AppInputError

TABLE = "rows"
SHOWN_ROWS = 2_000
"""How many rows the Results page's table shows (the download has all of them)."""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class ResultsDB:
    """The readable rows of one results folder (current units only, for a store) in DuckDB."""

    def __init__(self, con: duckdb.DuckDBPyConnection, attrs: dict[str, Any]):
        self._con = con
        self.attrs = attrs
        """``damaged`` (files left out), ``iclwb.superseded`` and ``iclwb.stale`` (as ``frame``'s)."""
        types = con.execute(f"DESCRIBE {TABLE}").fetchall()
        self.types = {str(r[0]): str(r[1]) for r in types}
        self.columns = list(self.types)
        self.n_rows = int(con.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])  # type: ignore[index]
        self._options: dict[str, list[Any]] | None = None

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: str | Path, root: str | Path | None = None) -> ResultsDB:
        """The rows under ``folder`` (within ``root``: ``results_view.results_folder``). The same
        checks and messages as ``results_view.load_results``: AppInputError when the folder is
        missing, refused, or holds no readable rows."""
        path = results_view.results_folder(folder, root)
        if not path.is_dir():
            raise AppInputError(f"results folder {str(path)!r} does not exist; run `iclwb demo` or a "
                                f"sweep first, or pass the right folder with `iclwb app --results DIR`")
        files = results_view.result_files(path)
        if not files:
            raise AppInputError(f"results folder {str(path)!r} holds no "
                                f"{'result rows' if (path / 'units').is_dir() else 'Parquet result files'} "
                                f"yet; run `iclwb demo` or `iclwb sweep run CONFIG` to fill it")
        try:
            if (path / "units").is_dir():
                con, attrs = cls._from_store(path)
            else:
                con, attrs = cls._from_files(path, files)
        except (duckdb.Error, OSError) as err:
            msg = " ".join(str(err).split())[:200]
            raise AppInputError(f"cannot read the results in {str(path)!r}: {msg}; the folder holds "
                                f"Parquet files that are not sweep results, or damaged ones: recompute "
                                f"or remove them") from None
        if con is None:
            damaged = attrs.get("damaged") or []
            raise AppInputError(f"every result file in {str(path)!r} is damaged or not Parquet "
                                f"({', '.join(damaged[:3])}); recompute them (`iclwb sweep run CONFIG`) "
                                f"or remove them")
        db = cls(con, attrs)
        if db.n_rows == 0:
            raise AppInputError(f"results folder {str(path)!r} holds no result rows yet")
        return db

    @staticmethod
    def _from_store(path: Path) -> tuple[duckdb.DuckDBPyConnection | None, dict[str, Any]]:
        store = ResultsStore(path, create=False)
        con = store.connect()  # views current / results over the sound units
        damaged = [f"units/{key}.parquet" for key in store.skipped]
        if not store.finished_keys():
            return None, {"damaged": damaged}
        con.execute(f"CREATE TABLE {TABLE} AS SELECT * EXCLUDE (current) FROM current")
        con.execute("DROP VIEW current")
        con.execute("DROP VIEW results")
        sel = store.selection()
        return con, {"damaged": damaged, "iclwb.superseded": dict(sel.superseded), "iclwb.stale": dict(sel.stale)}

    @staticmethod
    def _from_files(path: Path, files: Sequence[Path]) -> tuple[duckdb.DuckDBPyConnection | None, dict[str, Any]]:
        bad = results_view.damaged_parquet(files)
        damaged = [str(f.relative_to(path)) for f in bad]
        good = [str(f) for f in files if f not in bad]
        if not good:
            return None, {"damaged": damaged}
        con = duckdb.connect()
        con.read_parquet(good, union_by_name=True).create_view("files")
        con.execute(f"CREATE TABLE {TABLE} AS SELECT * FROM files")
        return con, {"damaged": damaged}

    # ------------------------------------------------------------------------------ queries
    def _where(self, selected: dict[str, Sequence[Any] | None]) -> tuple[str, list[Any]]:
        parts, args = [], []
        for col, values in selected.items():
            if values is None or (isinstance(values, (list, tuple, set)) and not values):
                continue
            if col not in self.types:
                return " WHERE false", []  # a filter on a column these rows lack keeps none
            vals = list(values) if isinstance(values, (list, tuple, set)) else [values]
            parts.append(f"{_ident(col)} IN ({', '.join('?' for _ in vals)})")
            args += vals
        return (" WHERE " + " AND ".join(parts) if parts else ""), args

    def query(self, sql: str, args: Sequence[Any] = ()) -> pd.DataFrame:
        """Any SQL on the table ``rows`` (a fresh cursor: safe from several sessions)."""
        return self._con.cursor().execute(sql, list(args)).df()

    def count(self, **selected: Sequence[Any] | None) -> int:
        """Rows whose columns are in the selected lists (an empty or None list keeps all)."""
        where, args = self._where(selected)
        row = self._con.cursor().execute(f"SELECT count(*) FROM {TABLE}{where}", args).fetchone()
        return int(row[0]) if row else 0

    def distinct(self, column: str, **selected: Sequence[Any] | None) -> list[Any]:
        """The sorted distinct non-null values of ``column`` among the selected rows."""
        if column not in self.types:
            return []
        where, args = self._where(selected)
        extra = f"{' AND' if where else ' WHERE'} {_ident(column)} IS NOT NULL"
        rows = self._con.cursor().execute(f"SELECT DISTINCT {_ident(column)} FROM {TABLE}{where}{extra}",
                                          args).fetchall()
        return sorted((r[0] for r in rows), key=lambda v: (str(type(v)), v))

    def frame(self, columns: Sequence[str] | None = None, limit: int | None = None,
              **selected: Sequence[Any] | None) -> pd.DataFrame:
        """The selected rows as pandas: only ``columns`` (those present) and at most ``limit`` rows;
        columns that are empty in every selected row are dropped when ``columns`` is None."""
        return self.select(selected, columns, limit)

    def select(self, selected: dict[str, Sequence[Any] | None], columns: Sequence[str] | None = None,
               limit: int | None = None) -> pd.DataFrame:
        """``frame`` with the filters as one dict."""
        where, args = self._where(selected)
        cols = [c for c in (columns or self.columns) if c in self.types]
        if not cols:
            return pd.DataFrame()
        sql = f"SELECT {', '.join(_ident(c) for c in cols)} FROM {TABLE}{where}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        df = self._con.cursor().execute(sql, args).df()
        if columns is None and len(df):
            df = df.dropna(axis=1, how="all")
        df.attrs.update(self.attrs)
        return df

    def filter_options(self) -> dict[str, list[Any]]:
        """The values a user can filter each of model, task, k, analysis by (columns present only)."""
        if self._options is None:
            self._options = {c: self.distinct(c) for c in results_view.FILTER_COLUMNS if c in self.types}
        return dict(self._options)

    def metric_names(self, **selected: Sequence[Any] | None) -> list[str]:
        """Metrics a user can plot among the selected rows (``results_view.metric_names``)."""
        if "metric" in self.types and "value" in self.types:
            return [str(m) for m in self.distinct("metric", **selected)]
        skip = set(results_view.FILTER_COLUMNS) | {"seed", "layer", "head", "wall_time", "wall_s"}
        numeric = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "REAL", "DECIMAL")
        return [c for c, t in self.types.items() if c not in skip and t.upper().startswith(numeric)]

    def metric_rows(self, metric: str, dims: Sequence[str], **selected: Sequence[Any] | None) -> pd.DataFrame:
        """The selected rows of one metric with only the columns a summary needs: ``dims``, the
        value, and the prompt where there is one (``results_view.metric_series``'s input)."""
        need = list(dict.fromkeys([*dims, "prompt", "value", "metric"]))
        if "metric" in self.types and "value" in self.types:
            return self.select({**selected, "metric": [metric]}, need)
        if metric not in self.types:
            raise AppInputError(f"no metric {metric!r} in these results; metrics: {self.metric_names()}")
        return self.select(selected, [c for c in need if c not in ("value", "metric")] + [metric])

    def csv(self, **selected: Sequence[Any] | None) -> bytes:
        """All the selected rows as UTF-8 CSV (what the download button serves)."""
        return results_view.results_csv(self.select(selected))
