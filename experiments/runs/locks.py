"""Unit locks: which process computes a unit, and the temporary files of writers.

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
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; locks are judged by host, pid and age
    fcntl = None  # type: ignore[assignment]

LOCK_GRACE_S = 5.0
"""An unreadable lock nobody holds is given this long to get its content (older writers created
the file before writing it) before it is broken."""


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



def tmp_path(root: Path, final: Path) -> Path:
    """Where this process writes ``final`` before moving it into place: ``root/tmp/``, named with
    the host and pid so that ``clean_tmp`` can tell a dead writer's leftovers."""
    host = os.uname().nodename.replace(".", "_").replace("@", "_")
    return root / "tmp" / f"{final.name}.{host}@{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


class UnitLocks:
    """The lock half of ``ResultsStore`` (a mixin): claim, inspect, release and break the locks in
    ``root/locks/``, and clean up dead writers' temporary files."""

    root: Path
    stale_after_s: float
    _held: dict[str, int]
    run_id: str

    def lock_path(self, key: str) -> Path:
        return self.root / "locks" / f"{key}.lock"

    def _tmp_path(self, final: Path) -> Path:
        return tmp_path(self.root, final)

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
