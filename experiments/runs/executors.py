"""Running a sweep's missing units: inline, on local processes, or on a Ray cluster.

The driver (the process that runs ``run_sweep``) owns the store: it claims a unit (lock file),
hands the computation to a worker, and writes the returned table and tensors atomically. Workers
only compute, so a Ray cluster needs no shared filesystem, and a driver killed at any moment loses
only the units in flight. At most ``workers`` units are claimed at a time, so two sweeps on one
store share the work unit by unit instead of one claiming everything.

- ``local`` with ``workers=1``: in this process (no start-up cost; what tests and small runs use).
- ``local`` with ``workers>1``: ``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
  start method (safe with torch threads); each worker loads a model once and keeps it.
- ``ray``: ``ray.init(address=ADDRESS)`` (or a local instance when no address is given); one Ray
  task per unit with ``num_cpus=1``.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import multiprocessing as mp
import os
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from experiments.runs import modelinfo
from experiments.runs.analyses import get_analysis
from experiments.runs.config import SweepConfig, Unit
from experiments.runs.locks import LockInfo
from experiments.runs.states import expected_provenance, stored_states  # noqa: F401 (re-exported)
from experiments.runs.store import ResultsStore
from probes.provenance import package_versions


def compute_unit(unit_dict: dict[str, Any], imports: list[str] | None = None) -> dict[str, Any]:
    """Worker side: run one unit's analysis; never raises (errors come back as text)."""
    t0, c0 = time.perf_counter(), time.process_time()
    _quiet_libraries()
    try:
        for m in imports or []:
            importlib.import_module(m)

        unit = Unit.from_dict(unit_dict)
        spec = get_analysis(unit.analysis)
        res = spec.run(unit.model, unit.task, unit.k, unit.seed, unit.params)
        return {"ok": True, "table": res.table, "tensors": res.tensors, "fingerprint": spec.fingerprint(),
                "wall_time_s": time.perf_counter() - t0, "cpu_time_s": time.process_time() - c0,
                "host": os.uname().nodename}
    except BaseException as err:  # report everything to the driver
        return {"ok": False, "error": f"{type(err).__name__}: {err}",
                "traceback": traceback.format_exc(), "wall_time_s": time.perf_counter() - t0,
                "host": os.uname().nodename}


def _quiet_libraries() -> None:
    """No per-load progress bars from transformers/hub inside units (the sweep has its own)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging  # noqa: PLC0415 (3.9 s import: only in workers)

        hf_logging.disable_progress_bar()
    except ImportError:
        pass


class _InlineExecutor(cf.Executor):
    """Runs each submission at once in this process (returns completed futures)."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as err:
            fut.set_exception(err)
        return fut


def _worker_init(parent: int) -> None:
    """Pool worker set-up: one torch thread each, and exit when the driver is gone (a driver
    killed with SIGKILL cannot shut its pool down; without this its workers would linger)."""


    torch.set_num_threads(max(1, int(os.environ.get("ICLWB_WORKER_THREADS", "1"))))

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True, name="iclwb-parent-watch").start()


class _RayExecutor:
    def __init__(self, address: str | None, workers: int):
        import ray  # noqa: PLC0415 (optional: pip install '.[ray]')

        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address:
                ray.init(address=address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            self.started = True
        self.remote = ray.remote(num_cpus=1, max_retries=0)(compute_unit)

    def submit(self, fn, *args):
        return self.remote.remote(*args).future()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self.started:
            self.ray.shutdown()


@dataclass
class SweepReport:
    name: str
    store: str
    total: int
    already_done: int = 0
    computed: list[str] = field(default_factory=list)
    done_by_others: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outdated: list[str] = field(default_factory=list)
    """Stored units that were stale (model checkpoint, analysis version or code changed); recomputed."""
    stale_reasons: dict[str, str] = field(default_factory=dict)
    """Why each unit of ``outdated`` was stale."""
    damaged: dict[str, str] = field(default_factory=dict)
    """Stored unit files found damaged (key -> problem); recomputed."""
    wall_s: float = 0.0
    run_id: str = ""

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        s = (f"sweep {self.name!r}: {self.total} units; {len(self.computed)} computed, "
             f"{self.already_done} already stored, {len(self.done_by_others)} finished by another "
             f"sweep, {len(self.failed)} failed ({self.wall_s:.1f}s) -> {self.store}")
        if self.outdated:
            why = Counter(self.stale_reasons.get(k, "model checkpoint changed") for k in self.outdated)
            s += (f"\n  {len(self.outdated)} stale stored unit(s) were recomputed: "
                  + "; ".join(f"{r} ({n})" for r, n in why.most_common()))
        if self.damaged:
            items = list(self.damaged.items())
            s += (f"\n  {len(items)} damaged unit file(s) were recomputed: "
                  + "; ".join(f"{k}: {why}" for k, why in items[:3]) + (" ..." if len(items) > 3 else ""))
        for key, err in list(self.failed.items())[:5]:
            s += f"\n  failed {key}: {err.splitlines()[0] if err else ''}"
        if self.failed:
            s += f"\n  tracebacks: {self.store}/errors/<key>.json; rerun the sweep to retry failed units"
        return s


def make_executor(kind: str, workers: int, address: str | None):
    if kind == "local":
        if workers <= 1:
            return _InlineExecutor()
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                      initializer=_worker_init, initargs=(os.getpid(),))
    if kind == "ray":
        return _RayExecutor(address, workers)
    raise ValueError(f"unknown executor {kind!r}; allowed: local, ray")


def _plan(cfg: SweepConfig, store: ResultsStore, units: list[Unit],
          run_id: str) -> tuple[SweepReport, list[Unit], dict[str, dict[str, Any]], dict[str, Any]]:
    """(the report so far, the units to compute in order, what the running code would store per
    unit, the provenance shared by every unit of this run)."""
    base = {"sweep": cfg.name, "config_hash": cfg.config_hash, "git_commit": modelinfo.git_commit(),
            "versions": json.dumps(package_versions(), sort_keys=True),
            "run_id": run_id}
    expect = expected_provenance(units)
    states = store.classify(units, expect)
    stale = [u for u in units if states[u.key][0] == "stale"]
    pending = [u for u in units if states[u.key][0] != "done"]
    hashes = {u.model: expect[u.key]["model_hash"] for u in units}
    # largest models first (longest units first: a better ETA and a shorter parallel makespan),
    # units of one model together (a worker keeps its loaded model)
    sizes = {m: modelinfo.weights_size(m) for m in hashes}
    pending.sort(key=lambda u: (-sizes[u.model], u.model, u.analysis, u.task, u.k, u.seed))
    report = SweepReport(cfg.name, str(store.root), len(units), len(units) - len(pending), run_id=run_id,
                         outdated=[u.key for u in stale],
                         stale_reasons={u.key: states[u.key][1] for u in stale},
                         damaged={k: why for k, (st, why) in states.items() if st == "damaged"})
    return report, pending, expect, base


class _SweepLoop:
    """The driver's loop over the pending units of one ``run_sweep``: claim a unit, hand it to the
    executor (at most ``limit`` in flight), write what comes back, and wait for units that another
    sweep holds (taking them over when its lock dies)."""

    def __init__(self, cfg: SweepConfig, store: ResultsStore, report: SweepReport, pending: list[Unit],
                 expect: dict[str, dict[str, Any]], base: dict[str, Any], ex: Any, limit: int, bar: Any,
                 on_unit: Callable[[Unit, str], None] | None) -> None:
        self.cfg, self.store, self.report, self.expect, self.base = cfg, store, report, expect, base
        self.ex, self.limit, self.bar, self.on_unit = ex, limit, bar, on_unit
        self.queue: deque[Unit] = deque(pending)
        self.inflight: dict[cf.Future, Unit] = {}
        self.elsewhere: dict[str, Unit] = {}
        self.claimed: set[str] = set()
        self.told: set[str] = set()

    def is_done(self, u: Unit) -> bool:
        """Stored, sound and current (perhaps just written by another sweep)."""
        return self.store.has(u) and self.store.stale_reason(u.key, self.expect[u.key]) is None

    def tell_wait(self, key: str, info: LockInfo | None) -> None:
        """Say once per unit that it waits on another sweep's lock, and whose."""
        if key in self.told or info is None:
            return
        self.told.add(key)
        hint = (f"; if that sweep is gone, break it with `iclwb sweep unlock --store {self.store.root} --force`"
                if info.state == "unknown" else "")
        u = self.elsewhere.get(key)
        label = u.label() if u else key
        print(f"sweep {self.cfg.name!r}: waiting for unit {key} ({label}), claimed by {info.describe()}{hint}",
              file=sys.stderr, flush=True)

    def note(self, u: Unit, status: str) -> None:
        self.bar.update(1)
        self.bar.set_postfix_str(f"{status}: {u.label()}"[:60])
        if self.on_unit:
            self.on_unit(u, status)

    def run(self) -> None:
        try:
            while self.queue or self.inflight or self.elsewhere:
                self.submit_ready()
                if self.inflight:
                    self.collect()
                self.check_elsewhere()
                if self.elsewhere and not self.inflight and not self.queue:
                    time.sleep(0.3)
        finally:
            for key in self.claimed:
                self.store.release(key)
            self.bar.close()
            self.ex.shutdown(wait=False, cancel_futures=True)

    def submit_ready(self) -> None:
        """Claim and submit queued units until ``limit`` are in flight."""
        store, report = self.store, self.report
        while self.queue and len(self.inflight) < self.limit:
            u = self.queue.popleft()
            if self.is_done(u):
                report.done_by_others.append(u.key)
                self.note(u, "stored")
                continue
            if not store.claim(u.key):
                self.elsewhere[u.key] = u
                self.tell_wait(u.key, store.read_lock(u.key))
                continue
            self.claimed.add(u.key)
            if self.is_done(u):  # finished between the check and the claim
                store.release(u.key)
                self.claimed.discard(u.key)
                report.done_by_others.append(u.key)
                self.note(u, "stored")
                continue
            self.inflight[self.ex.submit(compute_unit, u.as_dict(), self.cfg.imports)] = u

    def collect(self) -> None:
        """Write the units that finished (or failed) within half a second."""
        done, _ = cf.wait(list(self.inflight), timeout=0.5, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            u = self.inflight.pop(fut)
            try:
                res = fut.result()
            except BaseException as err:  # a dead worker process
                res = {"ok": False, "error": f"{type(err).__name__}: {err}",
                       "traceback": traceback.format_exc(), "wall_time_s": 0.0, "host": ""}
            status = self.record(u, res)
            self.store.release(u.key)
            self.claimed.discard(u.key)
            self.note(u, status)

    def record(self, u: Unit, res: dict[str, Any]) -> str:
        """Store one worker's answer (its table, or its error); returns the unit's new status."""
        prov = {**self.base, "model_hash": modelinfo.model_hash(u.model),
                **(res.get("fingerprint") or {k: self.expect[u.key][k] for k in ("analysis_version", "code_hash")}),
                "host": res.get("host", ""), "wall_time_s": float(res["wall_time_s"]),
                "cpu_time_s": float(res.get("cpu_time_s", float("nan"))),
                "computed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if res["ok"]:
            self.store.write_unit(u, res["table"], prov, res.get("tensors"))
            self.report.computed.append(u.key)
            return "computed"
        self.store.write_error(u, RuntimeError(res["error"]), {**prov, "worker_traceback": res["traceback"]})
        self.report.failed[u.key] = res["error"]
        return "failed"

    def check_elsewhere(self) -> None:
        """Units another sweep holds: done by it, or back in the queue when its lock died."""
        for key, u in list(self.elsewhere.items()):
            if self.is_done(u):
                self.elsewhere.pop(key)
                self.report.done_by_others.append(key)
                self.note(u, "by another sweep")
            else:
                info = self.store.read_lock(key)
                if info is None or info.is_stale(self.store.stale_after_s):
                    self.elsewhere.pop(key)
                    self.queue.append(u)


def run_sweep(cfg: SweepConfig, store: ResultsStore | str, executor: str = "local",
              workers: int = 1, address: str | None = None, progress: bool = True,
              units: list[Unit] | None = None,
              on_unit: Callable[[Unit, str], None] | None = None) -> SweepReport:
    """Compute every unit of ``cfg`` that ``store`` lacks; see the module docstring.

    With ``workers > 1`` the pool starts processes with ``spawn``: a script that calls this must
    guard its entry point with ``if __name__ == "__main__":`` (the CLI and notebooks need nothing).
    """
    store = store if isinstance(store, ResultsStore) else ResultsStore(store)
    units = cfg.units() if units is None else units
    store.record_sweep(cfg, units)
    store.clean_tmp()
    store.clean_locks()
    t0 = time.perf_counter()
    run_id = uuid.uuid4().hex[:12]
    store.run_id = run_id
    report, pending, expect, base = _plan(cfg, store, units, run_id)
    if not pending:
        report.wall_s = time.perf_counter() - t0
        return report
    workers = max(1, min(workers, len(pending)))
    limit = workers if executor == "local" else 2 * workers
    ex = make_executor(executor, workers, address)
    bar = tqdm(total=len(units), initial=report.already_done, desc=f"sweep {cfg.name}",
               unit="unit", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    _SweepLoop(cfg, store, report, pending, expect, base, ex, limit, bar, on_unit).run()
    report.wall_s = time.perf_counter() - t0
    return report
