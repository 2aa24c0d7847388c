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

Query all results at once (different analyses have different columns; DuckDB unions them by name)::

    duckdb.sql("SELECT model, metric, avg(value) FROM read_parquet('RESULTS/units/*.parquet',"
               " union_by_name=true) GROUP BY ALL")
    ResultsStore("RESULTS").frame(analysis="head_scan", model="induction-2l")   # pandas

(the store's own queries pass the sound files to DuckDB as a list of paths, never pasted into SQL,
so any folder name works; reading the glob yourself includes damaged files).

Safety: every file is written to ``tmp/`` and moved into place with ``os.replace`` (atomic on POSIX),
tensors before the table, so a process killed at any moment (SIGKILL included) leaves either a
complete unit or none.

Locks: a worker claims a unit by creating ``locks/<key>.lock`` atomically with its content: the
JSON (host, pid, the process's start time and boot id, run id, command, time) is written to
``tmp/``, the file is locked with ``flock`` and then hard-linked into place, which fails when the
lock exists. The owner holds the ``flock`` until it removes the lock, and the kernel drops it when
the owner dies (SIGKILL included), so on this host a lock is live exactly while someone holds its
``flock``; the PID alone is never trusted (PIDs are reused). A lock nobody holds is dead, and is
broken at once, whatever it contains (garbage, nothing, another process's PID); the file is only
removed by a process holding its ``flock``, so two processes cannot both break it or break a new
owner's lock. A lock written by another host cannot be checked from here: it counts as live for
``stale_after_s`` (24 h), and a sweep waiting on one says so. ``iclwb sweep status`` lists every
lock with its owner, age and state; ``iclwb sweep unlock`` breaks dead ones, ``--force`` any.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from safetensors.torch import load_file, save_file

from experiments.runs.config import SweepConfig, Unit, canonical_json
from probes.errors import WorkbenchError
from probes.provenance import file_sha256

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; locks are judged by host, pid and age
    fcntl = None  # type: ignore[assignment]

FORMAT = {"format": "iclwb-results", "version": 2}
PROVENANCE_COLUMNS = ("unit_key", "analysis", "model", "model_hash", "task", "k", "seed", "params",
                      "analysis_version", "code_hash", "sweep", "config_hash", "git_commit", "versions",
                      "host", "run_id", "computed_at", "wall_time_s", "cpu_time_s")
LOCK_GRACE_S = 5.0
"""An unreadable lock nobody holds is given this long to get its content (older writers created
the file before writing it) before it is broken."""


class StoreError(WorkbenchError):
    """A results folder that is missing, empty, or not a results store."""


# ------------------------------------------------------------------------------------ processes
def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
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


def _proc_start(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _hostname() -> str:
    return os.uname().nodename


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"


@dataclass
class LockInfo:
    """A lock file and what is known of its owner. ``state``: ``live`` (its owner holds it),
    ``dead`` (nobody does: breakable), ``unknown`` (written on another host; live until
    ``stale_after_s``), ``new`` (unreadable and younger than LOCK_GRACE_S)."""

    path: Path
    host: str = ""
    pid: int = -1
    started: float = 0.0
    proc_start: int | None = None
    boot_id: str = ""
    run_id: str = ""
    command: str = ""
    readable: bool = True
    state: str = "dead"
    mtime: float = 0.0

    @property
    def key(self) -> str:
        return self.path.stem

    @property
    def age_s(self) -> float:
        return time.time() - (self.started or self.mtime)

    def is_stale(self, stale_after_s: float) -> bool:
        """True when the lock may be broken (its owner is gone, or it is too old to trust)."""
        if self.state == "dead":
            return True
        return self.state == "unknown" and self.age_s > stale_after_s

    def owner(self) -> str:
        if not self.readable:
            return "unreadable lock file (no owner recorded)"
        who = f"host {self.host or '?'} pid {self.pid}"
        if self.run_id:
            who += f" run {self.run_id}"
        return who

    def describe(self) -> str:
        what = {"live": "live", "dead": "dead (owner gone; broken by the next run or `iclwb sweep unlock`)",
                "unknown": "owner on another host, cannot be checked from here",
                "new": "being written"}[self.state]
        return f"{self.owner()}, {_age(self.age_s)} old: {what}"


# ------------------------------------------------------------------------------------ validation
_ARTEFACT_SHA: dict[str, tuple[tuple, str]] = {}


def _artefact_sha256(path: Path) -> str:
    """sha256 of an artefact file, cached per (inode, size, mtime, ctime): artefacts can be large."""
    st = path.stat()
    sig = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _ARTEFACT_SHA.get(str(path))
    if hit is None or hit[0] != sig:
        hit = (sig, file_sha256(path))
        _ARTEFACT_SHA[str(path)] = hit
    return hit[1]


CHECKSUM_MARK = b"iclwb-sha256:"
"""Prefix of the ``iclwb.checksum`` metadata value: the 64 hex digits that follow it are the
sha256 of the whole file with those digits read as zeros."""


def sealed_checksum(data: bytes) -> tuple[str | None, str]:
    """(the checksum a unit file's bytes record (None when they hold none), the checksum of those
    bytes); equal for an intact file."""
    i = data.rfind(CHECKSUM_MARK)
    if i < 0:
        return None, ""
    j = i + len(CHECKSUM_MARK)
    stored = data[j:j + 64].decode("ascii", errors="replace")
    return stored, hashlib.sha256(data[:j] + b"0" * 64 + data[j + 64:]).hexdigest()


class ResultsStore:
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

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

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
        return self._check(key, path, art)

    def _check(self, key: str, path: Path, art: Path) -> str | None:

        try:
            data = path.read_bytes()
        except OSError as err:
            return f"unreadable: {err.strerror}"
        stored, actual = sealed_checksum(data)
        if stored is not None and stored != actual:
            return "checksum mismatch (the file changed after it was written: truncated or overwritten)"
        try:
            meta = pq.read_schema(path).metadata or {}
            prov = json.loads(meta.get(b"iclwb.provenance", b"{}"))
            stored_key = Unit.from_dict(json.loads(meta[b"iclwb.unit"])).key
            if stored is None:
                pq.read_table(path)  # format 1 (no checksum): readable is all that can be checked
        except KeyError:
            return "not a unit file (no iclwb.unit metadata)"
        except Exception as err:  # noqa: BLE001 - any reading error is damage
            msg = str(err).replace(f"'{path}'", "").replace(str(path), "").strip().split(". ")[0]
            return f"unreadable: {' '.join(msg.split())[:100]}"
        if stored is None and (b"iclwb.checksum" in meta or "code_hash" in prov or "analysis_version" in prov):
            # written by this store format, which always seals a checksum: a flip in the mark
            # itself must not make the file pass for an older, unchecked one
            return "checksum missing (the file changed after it was written)"
        if stored_key != key:
            return f"holds unit {stored_key}, not {key}"
        want = prov.get("artefact_sha256")
        if want:
            if not art.exists():
                return f"artefact file {art.name} is missing"
            if _artefact_sha256(art) != want:
                return f"artefact file {art.name} is damaged (sha256 mismatch)"
        return None

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
        except Exception:  # noqa: BLE001 - a damaged file has no provenance
            return {}

    def stored_unit(self, key: str) -> Unit | None:
        """The unit a stored file holds (from its metadata), None when unreadable."""

        try:
            meta = pq.read_schema(self.unit_path(key)).metadata or {}
            return Unit.from_dict(json.loads(meta[b"iclwb.unit"]))
        except Exception:  # noqa: BLE001
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

    # ---------------------------------------------------------------------------------- locks
    def _lock_content(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"host": _hostname(), "pid": pid, "proc_start": _proc_start(pid), "boot_id": _boot_id(),
                "started": time.time(), "run_id": self.run_id,
                "command": " ".join(sys.argv)[:200], "flock": fcntl is not None}

    def read_lock(self, key: str) -> LockInfo | None:
        """The lock of unit ``key`` with its owner and state (None when there is none)."""
        path = self.lock_path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            return self._inspect(path, fd, probe=True)
        finally:
            os.close(fd)

    def _inspect(self, path: Path, fd: int, probe: bool) -> LockInfo:
        """Parse the lock open at ``fd``; with ``probe`` find out whether its flock is held."""
        st = os.fstat(fd)
        raw = b""
        try:
            while chunk := os.read(fd, 65536):
                raw += chunk
        except OSError:
            pass
        try:
            d = json.loads(raw.decode() or "null")
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            info = LockInfo(path, str(d.get("host", "")), int(d.get("pid", -1)), float(d.get("started", 0.0)),
                            d.get("proc_start"), str(d.get("boot_id", "")), str(d.get("run_id", "")),
                            str(d.get("command", "")), True, "dead", st.st_mtime)
        except (ValueError, TypeError, UnicodeDecodeError):
            info = LockInfo(path, readable=False, mtime=st.st_mtime)
        held = None
        if probe and fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held = True
            except OSError:  # a file system without flock
                held = None
            else:
                held = False
                fcntl.flock(fd, fcntl.LOCK_UN)
        info.state = self._judge(info, held)
        return info

    def _judge(self, info: LockInfo, held: bool | None) -> str:
        """live / dead / unknown / new (see LockInfo), given whether its flock is held."""
        if held:
            return "live"
        if not info.readable:
            return "new" if time.time() - info.mtime < LOCK_GRACE_S else "dead"
        here = info.host == _hostname() and (not info.boot_id or info.boot_id == _boot_id())
        if not here:
            return "dead" if info.host == _hostname() else "unknown"  # same host, earlier boot: dead
        if held is False:
            return "dead"  # on this host, nobody holds it: its owner is gone
        # no flock on this file system: the pid, checked against the process's start time
        if not _pid_alive(info.pid):
            return "dead"
        if info.proc_start is not None and _proc_start(info.pid) not in (None, info.proc_start):
            return "dead"  # the pid now belongs to another process
        return "live"

    def claim(self, key: str) -> bool:
        """Try to take the lock of unit ``key``; True when this process now owns it (until
        ``release``). A dead lock is broken first (see the module docstring)."""
        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            tmp = self._tmp_path(path)
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            try:
                os.write(fd, json.dumps(self._lock_content()).encode())
                os.fsync(fd)
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held before anyone can see it
                try:
                    os.link(tmp, path)  # atomic: fails when the lock exists; complete when it appears
                except OSError as err:
                    if err.errno != errno.EEXIST:
                        raise
                    os.close(fd)
                    fd = -1
                    if self._break_if_dead(path):
                        continue
                    return False
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                raise
            finally:
                tmp.unlink(missing_ok=True)
            self._held[key] = fd
            return True
        return False

    def _break_if_dead(self, path: Path, force: bool = False) -> bool:
        """Remove the lock at ``path`` if its owner is gone (or ``force``); True when it is gone.

        Only a process holding the lock's flock removes it, after checking that ``path`` is still
        that file: so of several processes breaking one dead lock only one acts, and a lock
        created since by a new owner is never removed by mistake."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return True
        try:
            got = True
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    got = False
                except OSError:
                    got = None  # type: ignore[assignment]
            if got is False and not force:
                return False
            info = self._inspect(path, fd, probe=False)
            info.state = self._judge(info, None if got is None else (not got))
            if not force and not info.is_stale(self.stale_after_s):
                return False
            try:
                cur = os.stat(path)
            except FileNotFoundError:
                return True
            st = os.fstat(fd)
            if (cur.st_ino, cur.st_dev) != (st.st_ino, st.st_dev):
                return False  # replaced by a new owner's lock meanwhile
            path.unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def release(self, key: str) -> None:
        """Remove this process's lock of ``key`` (only if it is still ours)."""
        path = self.lock_path(key)
        fd = self._held.pop(key, None)
        if fd is None:
            return
        try:
            cur = os.stat(path)
            st = os.fstat(fd)
            if (cur.st_ino, cur.st_dev) == (st.st_ino, st.st_dev):
                path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)

    def locks(self) -> list[LockInfo]:
        """Every lock file with its owner, age and state."""
        out = []
        for p in sorted((self.root / "locks").glob("*.lock")):
            info = self.read_lock(p.stem)
            if info is not None:
                out.append(info)
        return out

    def running(self) -> dict[str, LockInfo]:
        """The locks that count as held (live, unverifiable but recent, or being written)."""
        return {i.key: i for i in self.locks() if not i.is_stale(self.stale_after_s)}

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
        return len(self.unlock())

    def unlock(self, keys: Iterable[str] | None = None, force: bool = False) -> list[LockInfo]:
        """Break the dead locks among ``keys`` (default: all); with ``force`` also live ones (only
        when you know their sweep is gone: its unit may then be computed twice). Returns the
        broken locks as they were."""
        keys = [p.stem for p in (self.root / "locks").glob("*.lock")] if keys is None else list(keys)
        broken = []
        for key in sorted(keys):
            info = self.read_lock(key)
            if info is None or not (force or info.is_stale(self.stale_after_s)):
                continue
            if self._break_if_dead(self.lock_path(key), force=force):
                broken.append(info)
        return broken

    def clean_tmp(self) -> int:
        """Remove temporary files left by dead writers on this host; returns how many."""
        n = 0
        me = _hostname().replace(".", "_").replace("@", "_")
        for p in (self.root / "tmp").glob("*"):
            parts = p.name.split(".")
            try:
                old = time.time() - p.stat().st_mtime > self.stale_after_s
            except FileNotFoundError:
                continue
            try:
                host, pid = parts[-3].rsplit("@", 1)
                dead = old or (host == me and not _pid_alive(int(pid)))
            except (IndexError, ValueError):
                dead = old
            if dead:
                p.unlink(missing_ok=True)
                n += 1
        return n

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
        with open(tmp, "rb+") as f:  # seal: the file's sha256 in place of the zeros
            data = f.read()
            _, digest = sealed_checksum(data)
            f.seek(data.rfind(CHECKSUM_MARK) + len(CHECKSUM_MARK))
            f.write(digest.encode())
            f.flush()
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

    def connect(self):
        """A DuckDB connection with a view ``results`` over every sound unit (none: no view).
        The file names are handed to DuckDB as a list of values, never pasted into SQL."""

        con = duckdb.connect()
        files = self.sound_files()
        if files:
            con.read_parquet([str(f) for f in files], union_by_name=True).create_view("results")
        return con

    def sql(self, query: str) -> pd.DataFrame:
        """Run SQL against the view ``results``, e.g. ``SELECT * FROM results WHERE k = 4``."""
        con = self.connect()
        if not self.finished_keys():
            raise StoreError(f"results store {self.root} has no finished units yet"
                             + (f" ({self.skipped_line()})" if self.skipped else ""))

        try:
            return con.execute(query).df()
        except duckdb.Error as err:
            msg = " ".join(str(err).split())[:300]
            raise StoreError(f"the SQL query failed: {msg}; query the view 'results', e.g. "
                             f"\"SELECT model, avg(value) FROM results GROUP BY model\"") from None

    def frame(self, **filters: Any) -> pd.DataFrame:
        """All rows of the sound units as pandas, filtered by column equality (a list value means
        "any of"; None means no filter, while 0 and "" are values). Damaged units are left out and
        listed in ``self.skipped`` and ``df.attrs["iclwb.skipped"]``."""
        con = self.connect()
        if not self.finished_keys() or not (self.root / "units").is_dir():
            df = pd.DataFrame(columns=list(PROVENANCE_COLUMNS) + ["metric", "value"])
            df.attrs["iclwb.skipped"] = dict(self.skipped)
            return df
        where, args = [], []
        for col, val in filters.items():
            if val is None:
                continue
            vals = list(val) if isinstance(val, (list, tuple, set)) else [val]
            where.append(f'"{col}" IN ({", ".join("?" for _ in vals)})')
            args.extend(vals)
        q = "SELECT * FROM results" + (" WHERE " + " AND ".join(where) if where else "")
        try:
            df = con.execute(q, args).df()
        except Exception as err:
            if isinstance(err, duckdb.BinderException):
                raise StoreError(f"cannot filter: {err}") from None
            raise
        df.attrs["iclwb.skipped"] = dict(self.skipped)
        return df

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
