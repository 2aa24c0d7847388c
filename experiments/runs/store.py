"""The results store: a folder of Parquet files, one per finished unit, read with DuckDB or pandas.

Format (version 2)::

    RESULTS/
      store.json                      {"format": "iclwb-results", "version": 2}
      units/<key>.parquet             the tidy table of one finished unit (the commit marker)
      artefacts/<key>.safetensors     the unit's tensors (attention maps, head-score tables), if any
      sweeps/<config_hash>.toml       the text of every sweep config run into this store
      sweeps/<config_hash>.json       its name, hash and the unit keys it consists of
      errors/<key>.json               traceback of a unit that failed (removed when it succeeds)
      locks/<key>.lock                a claim on a unit being computed (see Locks below)
      tmp/                            files being written (renamed into place when complete)
      superseded/                     units moved aside by ``iclwb sweep prune`` (units/, artefacts/,
                                      pruned.json: key -> why it was superseded)

``<key>`` is ``Unit.key``: a hash of (model, task, k, seed, analysis, params), so the same unit run
by any sweep lands in the same file.

Every row of every Parquet file holds the analysis's own columns (always ``metric`` and ``value``,
plus dimensions such as ``layer``, ``head``, ``step``, ``condition``) and these provenance columns:

    unit_key, analysis, model, model_hash (sha256 of the checkpoint file, e.g. a zoo model's
    model.safetensors), task, k, seed, params (JSON), analysis_version, code_hash, sweep,
    config_hash, git_commit, versions (JSON of package versions), host, run_id, computed_at (UTC
    ISO time), wall_time_s, cpu_time_s

The file-level Parquet metadata repeats the unit (key ``iclwb.unit``) and the provenance
(``iclwb.provenance``, which also holds ``artefact_sha256``, the sha256 of the unit's safetensors
file), and holds ``iclwb.checksum``: ``iclwb-sha256:`` and the sha256 of the whole file with these
64 hex digits read as zeros (written in place once the file is complete), so any change to any
byte of the file is detected. The safetensors header's metadata holds the same unit JSON.

A unit is *finished* when its Parquet file exists and is *sound*: its checksum matches its bytes,
its metadata names this unit, and its artefact file matches ``artefact_sha256``.
A file that fails any of these is *damaged* (truncated, bit-flipped, overwritten): ``iclwb sweep
status`` names it, the next ``iclwb sweep run`` recomputes it, and every query (``frame``, ``sql``,
``iclwb sweep results``, the report, the app) leaves it out and names it instead of failing. A
finished unit is *current* while its model checkpoint (``model_hash``), its analysis's version
and its analysis's code (``analysis_version``, ``code_hash``; see ``AnalysisSpec``) are those of
the running code; otherwise it is *stale*: ``status`` counts it, ``run`` recomputes it and
``results`` says when the rows it prints come from different versions. The git commit and the
package versions are recorded but do not make a unit stale (every commit would).

One truth per cell: several units can answer the same study cell (analysis, model, task, k,
seed, prompt format), e.g. a pilot and the full-size run. Every reader shows only the *current*
unit of each cell (``experiments.runs.cells``: the running code's, then the most prompts, then
the latest); ``frame(runs="all")`` and ``iclwb sweep results --all-runs`` show the rest, and
``iclwb sweep prune`` moves superseded units to ``superseded/`` (never deletes).

Query all results at once (different analyses have different columns; DuckDB unions them by name)::

    con = ResultsStore("RESULTS").connect()      # views: current (one unit per cell), results (all)
    con.sql("SELECT model, metric, avg(value) FROM current GROUP BY ALL")
    ResultsStore("RESULTS").frame(analysis="head_scan", model="induction-2l")   # pandas, current only

(the store's own queries pass the sound files to DuckDB as a list of paths, never pasted into SQL,
so any folder name works; reading the glob yourself includes damaged and superseded files).

Safety: every file is written to ``tmp/`` and moved into place with ``os.replace`` (atomic on POSIX),
tensors before the table, so a process killed at any moment (SIGKILL included) leaves either a
complete unit or none.

Locks: a worker claims a unit by creating ``locks/<key>.lock`` atomically (see
``experiments.runs.locks``); ``iclwb sweep status`` lists every lock with its owner, age and state;
``iclwb sweep unlock`` breaks dead ones, ``--force`` any. The checksums are
``experiments.runs.unitfile``'s.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import load_file, save_file

from experiments.runs.cells import Selection, select
from experiments.runs.config import SweepConfig, Unit, canonical_json
from experiments.runs.locks import UnitLocks
from experiments.runs.unitfile import CHECKSUM_MARK, check_unit_file, seal
from probes.errors import WorkbenchError
from probes.provenance import file_sha256

FORMAT = {"format": "iclwb-results", "version": 2}
PROVENANCE_COLUMNS = ("unit_key", "analysis", "model", "model_hash", "task", "k", "seed", "params",
                      "analysis_version", "code_hash", "sweep", "config_hash", "git_commit", "versions",
                      "host", "run_id", "computed_at", "wall_time_s", "cpu_time_s")


class StoreError(WorkbenchError):
    """A results folder that is missing, empty, or not a results store."""



class ResultsStore(UnitLocks):
    """A results folder (see the module docstring for the format)."""

    def __init__(self, root: str | os.PathLike, create: bool = True, stale_after_s: float = 24 * 3600):
        self.root = Path(root)
        self.stale_after_s = stale_after_s
        self.skipped: dict[str, str] = {}
        """The damaged units the last query left out (key -> problem)."""
        self._held: dict[str, int] = {}
        self.run_id = ""
        """Recorded in this process's locks (``run_sweep`` sets it)."""
        if create:
            if self.root.exists() and not self.root.is_dir():
                raise StoreError(f"results store {self.root} is an existing file, not a folder; "
                                 f"pick a folder name (e.g. --store {self.root}.d) or move the file")
            try:
                for sub in ("units", "artefacts", "sweeps", "errors", "locks", "tmp"):
                    (self.root / sub).mkdir(parents=True, exist_ok=True)
                marker = self.root / "store.json"
                if not marker.exists():
                    self._atomic_write_bytes(marker, (json.dumps(FORMAT) + "\n").encode())
            except OSError as err:
                raise StoreError(f"cannot create the results store at {self.root} ({err.strerror or err}); "
                                 f"pick a folder you can write to with --store DIR") from None
        elif not (self.root / "units").is_dir():
            raise StoreError(f"{self.root} is not a results store (no units/ folder); run a sweep "
                             f"into it first: `iclwb sweep run CONFIG --store {self.root}` or `iclwb demo`")

    # ---------------------------------------------------------------------------------- paths
    def unit_path(self, key: str) -> Path:
        return self.root / "units" / f"{key}.parquet"

    def artefact_path(self, key: str) -> Path:
        return self.root / "artefacts" / f"{key}.safetensors"

    def error_path(self, key: str) -> Path:
        return self.root / "errors" / f"{key}.json"

    # ---------------------------------------------------------------------------------- state
    def unit_files(self) -> set[str]:
        """Keys of every unit file present, sound or damaged."""
        return {p.stem for p in (self.root / "units").glob("*.parquet")}

    def problem(self, key: str) -> str | None:
        """None when unit ``key``'s files are sound, else what is wrong (one phrase: "missing",
        or the damage). The table is checked on every call (its whole-file checksum: cheap, and a
        bit flip changes no time stamp); the artefact's sha256 once per state of the file."""
        path, art = self.unit_path(key), self.artefact_path(key)
        if not path.exists():
            return "missing"
        return check_unit_file(key, path, art)

    def damaged(self, keys: Iterable[str] | None = None) -> dict[str, str]:
        """Unit files present but not sound: key -> problem."""
        keys = self.unit_files() if keys is None else set(keys) & self.unit_files()
        out = {}
        for key in sorted(keys):
            why = self.problem(key)
            if why not in (None, "missing"):
                out[key] = why
        return out

    def has(self, unit: Unit | str) -> bool:
        """True when the unit's file exists and is sound (whether or not it is current)."""
        key = unit if isinstance(unit, str) else unit.key
        return self.problem(key) is None

    def finished_keys(self) -> set[str]:
        """Keys of the sound unit files (damaged ones are left out; see ``damaged``)."""
        return {k for k in self.unit_files() if self.problem(k) is None}

    def missing(self, units: Iterable[Unit]) -> list[Unit]:
        return [u for u in units if not self.has(u)]

    def stored_provenance(self, key: str) -> dict[str, Any]:
        """The provenance a finished unit was written with (from its Parquet footer)."""

        try:
            meta = pq.read_schema(self.unit_path(key)).metadata or {}
            return json.loads(meta.get(b"iclwb.provenance", b"{}"))
        except Exception:  # a damaged file has no provenance
            return {}

    def stored_unit(self, key: str) -> Unit | None:
        """The unit a stored file holds (from its metadata), None when unreadable."""

        try:
            meta = pq.read_schema(self.unit_path(key)).metadata or {}
            return Unit.from_dict(json.loads(meta[b"iclwb.unit"]))
        except Exception:
            return None

    def stale_reason(self, key: str, expect: dict[str, Any]) -> str | None:
        """None when stored unit ``key`` matches ``expect`` (``model_hash``, ``analysis_version``,
        ``code_hash`` of the running code; a key left out or "unknown" is not compared), else why not."""
        prov = self.stored_provenance(key)
        cur, old = expect.get("model_hash", "unknown"), prov.get("model_hash", "unknown")
        if cur not in (None, "unknown") and old not in (None, "unknown") and old != cur:
            return "model checkpoint changed"
        if expect.get("analysis_version") is not None:
            old_v = prov.get("analysis_version")
            if old_v is None:
                return "computed before analysis versions were recorded"
            if str(old_v) != str(expect["analysis_version"]):
                return f"analysis {prov.get('analysis', '')} version {old_v} -> {expect['analysis_version']}"
        cur_c, old_c = expect.get("code_hash"), prov.get("code_hash")
        if cur_c and old_c and cur_c != old_c:
            return f"analysis {prov.get('analysis', '')} code changed"
        return None

    def classify(self, units: Iterable[Unit], expect: dict[str, dict[str, Any]]) -> dict[str, tuple[str, str]]:
        """Each unit's state: key -> (``done`` | ``stale`` | ``damaged`` | ``missing``, reason),
        with ``expect[key]`` what the running code would store (see ``stale_reason``)."""
        out = {}
        for u in units:
            why = self.problem(u.key)
            if why == "missing":
                out[u.key] = ("missing", "")
            elif why is not None:
                out[u.key] = ("damaged", why)
            else:
                stale = self.stale_reason(u.key, expect.get(u.key, {}))
                out[u.key] = ("stale", stale) if stale else ("done", "")
        return out

    def outdated(self, units: Iterable[Unit], model_hashes: dict[str, str]) -> list[Unit]:
        """Finished units computed from a different checkpoint than the model's current one
        (a retrained zoo model): they are recomputed and replaced."""
        return [u for u in units if self.has(u)
                and self.stale_reason(u.key, {"model_hash": model_hashes.get(u.model, "unknown")})]

    def errors(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in (self.root / "errors").glob("*.json"):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (ValueError, OSError):
                pass
        return out

    def remove_units(self, keys: Iterable[str]) -> int:
        """Delete units (table, artefacts, error record); returns how many tables were removed."""
        n = 0
        for key in keys:
            if self.unit_path(key).exists():
                n += 1
            for p in (self.unit_path(key), self.artefact_path(key), self.error_path(key)):
                p.unlink(missing_ok=True)
        return n

    # ---------------------------------------------------------------------------------- writes
    def _atomic_write_bytes(self, final: Path, data: bytes) -> None:
        final.parent.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        tmp = self._tmp_path(final)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)

    def write_unit(self, unit: Unit, table: pd.DataFrame, provenance: dict[str, Any],
                   tensors: dict[str, Any] | None = None) -> Path:
        """Write a finished unit: tensors first, then the table (whose existence marks it done),
        with the artefact's sha256 and the unit's checksum in the table's metadata."""

        key = unit.key
        prov = {"unit_key": key, "analysis": unit.analysis, "model": unit.model, "task": unit.task,
                "k": unit.k, "seed": unit.seed, "params": unit.params_json, **provenance}
        prov.pop("artefact_sha256", None)
        if tensors:

            tmp = self._tmp_path(self.artefact_path(key))
            clean = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
            save_file(clean, str(tmp), metadata={"iclwb.unit": canonical_json(unit.as_dict()),
                                                 "unit_key": key})
            prov["artefact_sha256"] = file_sha256(tmp)
            os.replace(tmp, self.artefact_path(key))
        else:
            self.artefact_path(key).unlink(missing_ok=True)  # an earlier computation's tensors
        df = table.copy()
        for col in PROVENANCE_COLUMNS:
            if col in prov:
                df[col] = prov[col]
        front = [c for c in PROVENANCE_COLUMNS if c in df.columns]
        df = df[front + [c for c in df.columns if c not in front]]
        tbl = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(tbl.schema.metadata or {})
        meta[b"iclwb.unit"] = canonical_json(unit.as_dict()).encode()
        meta[b"iclwb.provenance"] = canonical_json(prov).encode()
        meta[b"iclwb.checksum"] = CHECKSUM_MARK + b"0" * 64
        tbl = tbl.replace_schema_metadata(meta)
        tmp = self._tmp_path(self.unit_path(key))
        pq.write_table(tbl, tmp)
        seal(tmp)  # the file's sha256 in place of the zeros
        os.replace(tmp, self.unit_path(key))
        self.error_path(key).unlink(missing_ok=True)
        return self.unit_path(key)

    def write_error(self, unit: Unit, err: BaseException, provenance: dict[str, Any]) -> None:
        info = {"unit": unit.as_dict(), "unit_key": unit.key, "error": f"{type(err).__name__}: {err}",
                "traceback": "".join(traceback.format_exception(err)), **provenance}
        self._atomic_write_bytes(self.error_path(unit.key), json.dumps(info, indent=1, default=str).encode())

    def record_sweep(self, cfg: SweepConfig, units: list[Unit]) -> None:
        h = cfg.config_hash
        self._atomic_write_bytes(self.root / "sweeps" / f"{h}.toml", cfg.source.encode())
        info = {"name": cfg.name, "config_hash": h, "units": [u.key for u in units],
                "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._atomic_write_bytes(self.root / "sweeps" / f"{h}.json", json.dumps(info, indent=1).encode())

    def sweeps(self) -> list[dict[str, Any]]:
        out = []
        for p in sorted((self.root / "sweeps").glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except (ValueError, OSError):
                pass
        return out

    # ---------------------------------------------------------------------------------- reads
    def sound_files(self) -> list[Path]:
        """The sound unit files; the damaged ones are recorded in ``self.skipped``."""
        self.skipped = self.damaged()
        return [self.unit_path(k) for k in sorted(self.unit_files()) if k not in self.skipped
                and self.problem(k) is None]

    def skipped_line(self) -> str | None:
        """One line naming the damaged units the last query left out (None when there were none)."""
        if not self.skipped:
            return None
        items = list(self.skipped.items())
        named = "; ".join(f"units/{k}.parquet: {why}" for k, why in items[:3])
        more = f"; and {len(items) - 3} more" if len(items) > 3 else ""
        return (f"left out {len(items)} damaged unit file(s) ({named}{more}); "
                f"`iclwb sweep run CONFIG --store {self.root}` recomputes them")

    def selection(self) -> Selection:
        """The current unit of every cell (``experiments.runs.cells``): judged against the running
        code (``states.stored_states``), cached while no unit file changes."""
        from experiments.runs.states import stored_states  # noqa: PLC0415 (imports every analysis)

        sig = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                           for p in (self.root / "units").glob("*.parquet")))
        cached = getattr(self, "_selection", None)
        if cached is not None and cached[0] == sig:
            return cached[1]
        units = []
        for key, (state, reason) in stored_states(self).items():
            if state == "damaged":
                continue
            u = self.stored_unit(key)
            if u is None:
                continue
            units.append({"key": key, "unit": u.as_dict(), "state": state, "reason": reason,
                          "computed_at": self.stored_provenance(key).get("computed_at")})
        sel = select(units)
        self._selection = (sig, sel)
        return sel

    def current_keys(self) -> set[str]:
        """Keys of the current unit of each cell (see ``selection``)."""
        return set(self.selection().current)

    def connect(self):
        """A DuckDB connection with two views over the sound units (none when there are none):
        ``results`` (every run, with a boolean column ``current``) and ``current`` (only the
        current unit of each cell; see ``experiments.runs.cells``). The file names are handed to
        DuckDB as a list of values, never pasted into SQL."""

        con = duckdb.connect()
        files = self.sound_files()
        if files:
            con.read_parquet([str(f) for f in files], union_by_name=True).create_view("all_runs")
            keys = pd.DataFrame({"unit_key": sorted(self.current_keys())}, dtype=str)
            con.register("current_keys", keys)
            con.execute("CREATE VIEW results AS SELECT *, unit_key IN (SELECT unit_key FROM current_keys)"
                        " AS current FROM all_runs")
            con.execute("CREATE VIEW current AS SELECT * FROM results WHERE current")
        return con

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL against the views ``current`` (the current unit of each cell) and ``results``
        (every run, column ``current``), e.g. ``SELECT * FROM current WHERE k = 4``."""
        con = self.connect()
        if not self.finished_keys():
            raise StoreError(f"results store {self.root} has no finished units yet"
                             + (f" ({self.skipped_line()})" if self.skipped else ""))

        try:
            return con.execute(query).df()
        except duckdb.Error as err:
            msg = " ".join(str(err).split())[:300]
            raise StoreError(f"the SQL query failed: {msg}; query the view 'current' (or 'results' for "
                             f"every run), e.g. \"SELECT model, avg(value) FROM current GROUP BY model\"") from None

    def frame(self, runs: str = "current", **filters: Any) -> pd.DataFrame:
        """The rows of the sound units as pandas, filtered by column equality (a list value means
        "any of"; None means no filter, while 0 and "" are values). ``runs="current"`` (default):
        only the current unit of each cell (``experiments.runs.cells``); ``runs="all"``: every
        run, superseded ones included. Either way a boolean column ``current`` says which rows are
        current, ``df.attrs["iclwb.superseded"]`` names the units left out or superseded and
        ``df.attrs["iclwb.stale"]`` the current units that are stale. Damaged units are left out
        and listed in ``self.skipped`` and ``df.attrs["iclwb.skipped"]``."""
        if runs not in ("current", "all"):
            raise StoreError(f"runs={runs!r}: use 'current' (the current unit of each cell) or 'all'")
        con = self.connect()
        if not self.finished_keys() or not (self.root / "units").is_dir():
            df = pd.DataFrame(columns=list(PROVENANCE_COLUMNS) + ["metric", "value", "current"])
            df.attrs.update({"iclwb.skipped": dict(self.skipped), "iclwb.superseded": {}, "iclwb.stale": {}})
            return df
        where, args = [], []
        for col, val in filters.items():
            if val is None:
                continue
            vals = list(val) if isinstance(val, (list, tuple, set)) else [val]
            where.append(f'"{col}" IN ({", ".join("?" for _ in vals)})')
            args.extend(vals)
        view = "current" if runs == "current" else "results"
        q = f"SELECT * FROM {view}" + (" WHERE " + " AND ".join(where) if where else "")
        try:
            df = con.execute(q, args).df()
        except Exception as err:
            if isinstance(err, duckdb.BinderException):
                raise StoreError(f"cannot filter: {err}") from None
            raise
        sel = self.selection()
        df.attrs["iclwb.skipped"] = dict(self.skipped)
        df.attrs["iclwb.superseded"] = dict(sel.superseded)
        df.attrs["iclwb.stale"] = dict(sel.stale)
        return df

    def prune(self) -> dict[str, str]:
        """Move every superseded unit (its table and artefact) to ``superseded/`` beside
        ``units/``; nothing is deleted, and moving the files back restores them. Returns the
        keys moved with why each was superseded."""
        sel = self.selection()
        dest = self.root / "superseded"
        for key in sel.superseded:
            for src, sub in ((self.unit_path(key), "units"), (self.artefact_path(key), "artefacts")):
                if src.exists():
                    (dest / sub).mkdir(parents=True, exist_ok=True)
                    os.replace(src, dest / sub / src.name)
        if sel.superseded:
            log = dest / "pruned.json"
            old = json.loads(log.read_text()) if log.exists() else {}
            old.update(sel.superseded)
            self._atomic_write_bytes(log, json.dumps(old, indent=1, sort_keys=True).encode())
        return dict(sel.superseded)

    def _sound(self, key: str) -> None:
        why = self.problem(key)
        if why is not None:
            raise StoreError(f"unit {key} in {self.root} is {why if why == 'missing' else 'damaged: ' + why}; "
                             f"`iclwb sweep run CONFIG --store {self.root}` recomputes it")

    def read_unit(self, key: str) -> pd.DataFrame:
        self._sound(key)
        return pd.read_parquet(self.unit_path(key))

    def tensors(self, key: str) -> dict[str, Any]:
        """The safetensors artefacts of unit ``key`` (empty dict when it has none)."""
        self._sound(key)
        path = self.artefact_path(key)
        if not path.exists():
            return {}

        return load_file(str(path))

    def iter_units(self) -> Iterator[dict[str, Any]]:
        """The unit (as a dict) of every sound unit file."""

        for p in self.sound_files():
            meta = pq.read_schema(p).metadata or {}
            yield json.loads(meta.get(b"iclwb.unit", b"{}"))
