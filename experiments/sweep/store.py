"""The results store: a folder of Parquet files, one per finished unit, read with DuckDB or pandas.

Format (version 1)::

    RESULTS/
      store.json                      {"format": "iclwb-results", "version": 1}
      units/<key>.parquet             the tidy table of one finished unit (the commit marker)
      artefacts/<key>.safetensors     the unit's tensors (attention maps, head-score tables), if any
      sweeps/<config_hash>.toml       the text of every sweep config run into this store
      sweeps/<config_hash>.json       its name, hash and the unit keys it consists of
      errors/<key>.json               traceback of a unit that failed (removed when it succeeds)
      locks/<key>.lock                a claim on a unit being computed (JSON: host, pid, started)
      tmp/                            files being written (renamed into place when complete)

``<key>`` is ``Unit.key``: a hash of (model, task, k, seed, analysis, params), so the same unit run
by any sweep lands in the same file. A unit is finished exactly when its Parquet file exists.

Every row of every Parquet file holds the analysis's own columns (always ``metric`` and ``value``,
plus dimensions such as ``layer``, ``head``, ``step``, ``condition``) and these provenance columns:

    unit_key, analysis, model, model_hash (sha256 of the checkpoint file, e.g. a zoo model's
    model.safetensors), task, k, seed, params (JSON), sweep, config_hash, git_commit,
    versions (JSON of package versions), host, run_id, computed_at (UTC ISO time), wall_time_s

The file-level Parquet metadata repeats the unit (key ``iclwb.unit``) and the provenance
(``iclwb.provenance``); the safetensors header's metadata holds the same unit JSON.

Query all results at once (different analyses have different columns; DuckDB unions them by name)::

    duckdb.sql("SELECT model, metric, avg(value) FROM read_parquet('RESULTS/units/*.parquet',"
               " union_by_name=true) GROUP BY ALL")
    ResultsStore("RESULTS").frame(analysis="head_scan", model="induction-2l")   # pandas

Safety: every file is written to ``tmp/`` and moved into place with ``os.replace`` (atomic on POSIX),
tensors before the table, so a process killed at any moment (SIGKILL included) leaves either a
complete unit or none. A worker claims a unit by creating its lock file with ``O_CREAT | O_EXCL``;
other workers (in this sweep or another one on the same store) skip a claimed unit and wait for it;
a lock whose process is gone (same host, dead pid) or older than ``stale_after_s`` is broken and the
unit recomputed. In the worst case (a lock broken while its owner still runs) a unit is computed
twice; the second rename replaces the first identical result, and no file is ever half-written.
"""

from __future__ import annotations

import json
import os
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import pandas as pd

from experiments.sweep.config import SweepConfig, Unit, canonical_json

FORMAT = {"format": "iclwb-results", "version": 1}
PROVENANCE_COLUMNS = ("unit_key", "analysis", "model", "model_hash", "task", "k", "seed", "params",
                      "sweep", "config_hash", "git_commit", "versions", "host", "run_id",
                      "computed_at", "wall_time_s", "cpu_time_s")


class StoreError(ValueError):
    """A results folder that is missing, empty, or not a results store."""


@dataclass
class LockInfo:
    host: str
    pid: int
    started: float
    path: Path

    def is_stale(self, stale_after_s: float) -> bool:
        if time.time() - self.started > stale_after_s:
            return True
        if self.host == os.uname().nodename:
            return not _pid_alive(self.pid)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class ResultsStore:
    """A results folder (see the module docstring for the format)."""

    def __init__(self, root: str | os.PathLike, create: bool = True, stale_after_s: float = 24 * 3600):
        self.root = Path(root)
        self.stale_after_s = stale_after_s
        if create:
            for sub in ("units", "artefacts", "sweeps", "errors", "locks", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            marker = self.root / "store.json"
            if not marker.exists():
                self._atomic_write_bytes(marker, (json.dumps(FORMAT) + "\n").encode())
        elif not (self.root / "units").is_dir():
            raise StoreError(f"{self.root} is not a results store (no units/ folder); run a sweep "
                             f"into it first: `iclwb sweep run CONFIG --store {self.root}` or `iclwb demo`")

    # ---------------------------------------------------------------------------------- paths
    def unit_path(self, key: str) -> Path:
        return self.root / "units" / f"{key}.parquet"

    def artefact_path(self, key: str) -> Path:
        return self.root / "artefacts" / f"{key}.safetensors"

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def error_path(self, key: str) -> Path:
        return self.root / "errors" / f"{key}.json"

    # ---------------------------------------------------------------------------------- state
    def has(self, unit: Unit | str) -> bool:
        key = unit if isinstance(unit, str) else unit.key
        return self.unit_path(key).exists()

    def finished_keys(self) -> set[str]:
        return {p.stem for p in (self.root / "units").glob("*.parquet")}

    def missing(self, units: Iterable[Unit]) -> list[Unit]:
        done = self.finished_keys()
        return [u for u in units if u.key not in done]

    def stored_provenance(self, key: str) -> dict[str, Any]:
        """The provenance a finished unit was written with (from its Parquet footer)."""
        import pyarrow.parquet as pq

        try:
            meta = pq.read_schema(self.unit_path(key)).metadata or {}
        except (OSError, ValueError):
            return {}
        return json.loads(meta.get(b"iclwb.provenance", b"{}"))

    def outdated(self, units: Iterable[Unit], model_hashes: dict[str, str]) -> list[Unit]:
        """Finished units computed from a different checkpoint than the model's current one
        (a retrained zoo model): they are recomputed and replaced."""
        done = self.finished_keys()
        out = []
        for u in units:
            cur = model_hashes.get(u.model, "unknown")
            if u.key in done and cur != "unknown":
                old = self.stored_provenance(u.key).get("model_hash", "unknown")
                if old not in ("unknown", cur):
                    out.append(u)
        return out

    def read_lock(self, key: str) -> LockInfo | None:
        path = self.lock_path(key)
        try:
            info = json.loads(path.read_text() or "{}")
            return LockInfo(info.get("host", ""), int(info.get("pid", -1)),
                            float(info.get("started", 0.0)), path)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            # being written right now, or garbage: judge by its age
            try:
                return LockInfo("", -1, path.stat().st_mtime, path)
            except FileNotFoundError:
                return None

    def claim(self, key: str) -> bool:
        """Try to take the lock of unit ``key``; True when this process now owns it."""
        path = self.lock_path(key)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.read_lock(key)
                if info is not None and info.is_stale(self.stale_after_s):
                    self._break_lock(path)
                    continue
                return False
            with os.fdopen(fd, "w") as f:
                json.dump({"host": os.uname().nodename, "pid": os.getpid(), "started": time.time()}, f)
            return True
        return False

    def _break_lock(self, path: Path) -> None:
        # rename first: of several processes breaking the same stale lock, one rename succeeds
        grave = path.with_name(f"{path.name}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(path, grave)
            grave.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def release(self, key: str) -> None:
        self.lock_path(key).unlink(missing_ok=True)

    def running(self) -> dict[str, LockInfo]:
        out = {}
        for p in (self.root / "locks").glob("*.lock"):
            info = self.read_lock(p.stem)
            if info is not None and not info.is_stale(self.stale_after_s):
                out[p.stem] = info
        return out

    def errors(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in (self.root / "errors").glob("*.json"):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (ValueError, OSError):
                pass
        return out

    def clean_locks(self) -> int:
        """Remove the locks of writers that are gone (e.g. a sweep killed with SIGKILL)."""
        n = 0
        for p in (self.root / "locks").glob("*.lock"):
            info = self.read_lock(p.stem)
            if info is not None and info.is_stale(self.stale_after_s):
                self._break_lock(p)
                n += 1
        return n

    def clean_tmp(self) -> int:
        """Remove temporary files left by dead writers on this host; returns how many."""
        n = 0
        me = os.uname().nodename
        for p in (self.root / "tmp").glob("*"):
            parts = p.name.split(".")
            try:
                host_pid = parts[1]
                host, pid = host_pid.rsplit("@", 1)
                dead = host == me and not _pid_alive(int(pid))
            except (IndexError, ValueError):
                dead = time.time() - p.stat().st_mtime > self.stale_after_s
            if dead:
                p.unlink(missing_ok=True)
                n += 1
        return n

    # ---------------------------------------------------------------------------------- writes
    def _tmp_path(self, final: Path) -> Path:
        host = os.uname().nodename.replace(".", "_").replace("@", "_")
        return self.root / "tmp" / f"{final.name}.{host}@{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"

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
        """Write a finished unit: tensors first, then the table (whose existence marks it done)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        key = unit.key
        if tensors:
            from safetensors.torch import save_file

            tmp = self._tmp_path(self.artefact_path(key))
            clean = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
            save_file(clean, str(tmp), metadata={"iclwb.unit": canonical_json(unit.as_dict()),
                                                 "unit_key": key})
            os.replace(tmp, self.artefact_path(key))
        df = table.copy()
        prov = {"unit_key": key, "analysis": unit.analysis, "model": unit.model, "task": unit.task,
                "k": unit.k, "seed": unit.seed, "params": unit.params_json, **provenance}
        for col in PROVENANCE_COLUMNS:
            if col in prov:
                df[col] = prov[col]
        front = [c for c in PROVENANCE_COLUMNS if c in df.columns]
        df = df[front + [c for c in df.columns if c not in front]]
        tbl = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(tbl.schema.metadata or {})
        meta[b"iclwb.unit"] = canonical_json(unit.as_dict()).encode()
        meta[b"iclwb.provenance"] = canonical_json(prov).encode()
        tbl = tbl.replace_schema_metadata(meta)
        tmp = self._tmp_path(self.unit_path(key))
        pq.write_table(tbl, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
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
    def _glob(self) -> str:
        return str(self.root / "units" / "*.parquet")

    def connect(self):
        """A DuckDB connection with a view ``results`` over every unit (empty store: no view)."""
        import duckdb

        con = duckdb.connect()
        if self.finished_keys():
            con.execute(f"CREATE VIEW results AS SELECT * FROM read_parquet("
                        f"'{self._glob()}', union_by_name=true)")
        return con

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL against the view ``results``, e.g. ``SELECT * FROM results WHERE k = 4``."""
        if not self.finished_keys():
            raise StoreError(f"results store {self.root} has no finished units yet")
        return self.connect().execute(query).df()

    def frame(self, **filters: Any) -> pd.DataFrame:
        """All rows as pandas, filtered by column equality (a list value means "any of")."""
        if not self.finished_keys():
            return pd.DataFrame(columns=list(PROVENANCE_COLUMNS) + ["metric", "value"])
        where, args = [], []
        for col, val in filters.items():
            if val is None:
                continue
            vals = list(val) if isinstance(val, (list, tuple, set)) else [val]
            where.append(f'"{col}" IN ({", ".join("?" for _ in vals)})')
            args.extend(vals)
        q = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        con = self.connect()
        try:
            return con.execute(q, args).df()
        except Exception as err:
            import duckdb

            if isinstance(err, duckdb.BinderException):
                raise StoreError(f"cannot filter: {err}") from None
            raise

    def read_unit(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.unit_path(key))

    def tensors(self, key: str) -> dict[str, Any]:
        """The safetensors artefacts of unit ``key`` (empty dict when it has none)."""
        path = self.artefact_path(key)
        if not path.exists():
            return {}
        from safetensors.torch import load_file

        return load_file(str(path))

    def iter_units(self) -> Iterator[dict[str, Any]]:
        import pyarrow.parquet as pq

        for p in sorted((self.root / "units").glob("*.parquet")):
            meta = pq.read_schema(p).metadata or {}
            yield json.loads(meta.get(b"iclwb.unit", b"{}"))
