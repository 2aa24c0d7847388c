"""Fault injection on the results store (issue 17, items 1-5 and 13): damaged unit files, stale
analysis versions, `demo --fresh`, garbage / empty / foreign-PID locks, kill -9 across runs,
concurrent writers, `results --seed 0`, a quote in the store path.

After every fault, `status` must tell the truth and a rerun must converge to results identical to a
clean run, with each unit computed once. The analyses are tiny (``checksum`` from
tests/unit/test_sweep_helpers.py and test-local ones), so most of this file runs in seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments.runs import ResultsStore, loads_config, run_sweep
from experiments.runs.registry import REGISTRY, AnalysisSpec, register
from tests.integration.test_sweep import PY, REPO, checksum_config, write

COLS = ["unit_key", "seed", "metric", "i", "value"]


def frame_of(store: ResultsStore) -> pd.DataFrame:
    df = store.frame(runs="all")  # every stored run: these tests check that nothing is lost
    return df[COLS].sort_values(["unit_key", "i"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean run of the 4-seed checksum sweep: the reference every faulty store must reach."""
    root = tmp_path_factory.mktemp("clean")
    cfg = loads_config(checksum_config(4))
    rep = run_sweep(cfg, ResultsStore(root / "res"), progress=False)
    assert rep.ok and len(rep.computed) == 4
    return cfg, root / "res", frame_of(ResultsStore(root / "res"))


def fresh_copy(clean, tmp_path) -> tuple:
    import shutil

    cfg, src, ref = clean
    dst = tmp_path / "res"
    shutil.copytree(src, dst)
    return cfg, ResultsStore(dst), ref


def status_out(capsys, *args: str) -> str:
    from experiments.cli.main import main

    assert main(["sweep", "status", *args]) == 0
    return capsys.readouterr().out


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# ------------------------------------------------------------------------------ 1. damaged units
def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def test_truncated_unit_is_damaged_named_and_recomputed(clean, tmp_path, capsys):
    """Audit: after `truncate -s 100` of one unit file, status said 15/15 done, run recomputed
    nothing, and results crashed ("No magic bytes")."""
    cfg, store, ref = fresh_copy(clean, tmp_path)
    cfg_path = write(tmp_path, cfg.source)
    victim = cfg.units()[1].key
    os.truncate(store.unit_path(victim), 100)
    out = status_out(capsys, str(cfg_path), "--store", str(store.root))
    assert "3/4 done" in out and "1 damaged" in out and f"damaged  {victim}" in out, out
    # queries leave it out and name it, instead of failing
    from experiments.cli.main import main

    assert main(["sweep", "results", "--store", str(store.root)]) == 0
    res = capsys.readouterr()
    assert "left out 1 damaged unit file(s)" in res.err and victim in res.err
    assert len(store.frame()) == 9 and victim in store.skipped
    assert store.sql("SELECT count(*) AS n FROM results")["n"][0] == 9
    from experiments.runs.report import build_report

    rep = build_report(store)
    assert any(victim in n for n in rep.notes)
    from iclwb_app.results_view import load_results

    assert len(load_results(store.root)) == 9
    # the next run recomputes exactly that unit
    rep = run_sweep(cfg, store, progress=False)
    assert rep.computed == [victim] and list(rep.damaged) == [victim]
    assert "damaged unit file(s) were recomputed" in rep.summary()
    assert frame_of(store).equals(ref)
    assert "4/4 done" in status_out(capsys, str(cfg_path), "--store", str(store.root))


def test_bit_flips_anywhere_are_detected(clean, tmp_path):
    """A flipped bit anywhere in a unit file (data pages, footer, metadata, magic bytes, the
    checksum itself) is reported as damage; the store then serves the other units only."""
    cfg, store, ref = fresh_copy(clean, tmp_path)
    key = cfg.units()[0].key
    path = store.unit_path(key)
    good = path.read_bytes()
    offsets = list(range(0, len(good), 23)) + [len(good) - 1]
    for offset in offsets:
        path.write_bytes(good)
        flip_byte(path, offset)
        assert store.problem(key) is not None, f"flip at byte {offset} of {len(good)} went unnoticed"
        if offset in (0, len(good) // 2, len(good) - 10):
            assert key not in store.finished_keys()
            assert frame_of(store).equals(ref[ref["unit_key"] != key].reset_index(drop=True))
    # the last flip, and one in the artefact file, are recomputed by the next run
    flip_byte(path, len(good) // 2)
    art = store.artefact_path(cfg.units()[2].key)
    flip_byte(art, art.stat().st_size - 3)
    assert set(store.damaged()) == {key, cfg.units()[2].key}
    rep = run_sweep(cfg, store, progress=False)
    assert sorted(rep.computed) == sorted([key, cfg.units()[2].key])
    assert frame_of(store).equals(ref) and not store.damaged()


def test_damaged_unit_read_is_one_clear_error(clean, tmp_path):
    from experiments.runs import StoreError

    cfg, store, _ = fresh_copy(clean, tmp_path)
    key = cfg.units()[0].key
    os.truncate(store.unit_path(key), 50)
    with pytest.raises(StoreError, match="damaged.*recomputes it"):
        store.read_unit(key)
    with pytest.raises(StoreError, match="damaged"):
        store.tensors(key)


# ------------------------------------------------------------------------------ 2. versions
PLUGIN = '''
import pandas as pd
from experiments.runs.registry import AnalysisSpec, register

def _scores(model, task, k, seed, params):
    return pd.DataFrame({{"metric": ["score"], "value": [{expr}]}})

register(AnalysisSpec(name="vplug", fn=_scores, params={{}}, uses_task=False, uses_k=False{version}))
'''


def _plugin(tmp_path: Path, monkeypatch, expr: str, version: int):
    """(Re)write and import a plugin module registering analysis ``vplug``."""
    import importlib

    d = tmp_path / "plug"
    d.mkdir(exist_ok=True)
    (d / "vplug_mod.py").write_text(PLUGIN.format(expr=expr, version=f", version={version}" if version > 1 else ""))
    monkeypatch.syspath_prepend(str(d))
    sys.modules.pop("vplug_mod", None)
    importlib.invalidate_caches()
    importlib.import_module("vplug_mod")


def _vcfg(seeds) -> str:
    return f'imports = ["vplug_mod"]\nseeds = {list(seeds)}\nmodels = ["induction-2l"]\nanalyses = ["vplug"]\n'


def test_changed_analysis_code_or_version_makes_units_stale(tmp_path, monkeypatch, capsys):
    """Audit: after changing an analysis's code, run said "15 already stored", and adding a seed
    mixed old and new semantics in one table."""
    from experiments.cli.main import main

    try:
        _plugin(tmp_path, monkeypatch, "seed * 1.0", 1)
        store = ResultsStore(tmp_path / "res")
        cfg_path = write(tmp_path, _vcfg([0, 1]))
        assert len(run_sweep(loads_config(cfg_path.read_text()), store, progress=False).computed) == 2
        # the code changes (no version bump): the stored units are stale
        _plugin(tmp_path, monkeypatch, "seed * 2.0", 1)
        out = status_out(capsys, str(cfg_path), "--store", str(store.root))
        assert "0/2 done, 2 stale" in out and "code changed" in out, out
        # adding a seed computes only it ... and `results` says the table mixes versions
        cfg3 = loads_config(_vcfg([2]))
        assert len(run_sweep(cfg3, store, progress=False).computed) == 1
        assert main(["sweep", "results", "--store", str(store.root)]) == 0
        res = capsys.readouterr()
        assert "mix 2 versions" in res.err and "2 of 3 units in these rows are stale" in res.err, res.err
        assert "analysis_version" in res.out.splitlines()[0]
        # rerunning the sweep recomputes the stale units, then nothing is mixed
        rep = run_sweep(loads_config(cfg_path.read_text()), store, progress=False)
        assert len(rep.computed) == 2 and len(rep.outdated) == 2 and "code changed" in rep.summary()
        assert main(["sweep", "results", "--store", str(store.root)]) == 0
        assert "warning" not in capsys.readouterr().err
        assert store.frame().sort_values("seed")["value"].tolist() == [0.0, 2.0, 4.0]
        # a version bump alone (same code) also makes them stale
        _plugin(tmp_path, monkeypatch, "seed * 2.0", 2)
        rep = run_sweep(loads_config(_vcfg([0, 1, 2])), store, progress=False)
        assert len(rep.computed) == 3 and "version 1 -> 2" in rep.summary()
        assert set(store.frame()["analysis_version"]) == {"2"}
        assert run_sweep(loads_config(_vcfg([0, 1, 2])), store, progress=False).computed == []
    finally:
        REGISTRY.pop("vplug", None)
        sys.modules.pop("vplug_mod", None)


def test_code_hash_ignores_comments_and_docstrings():
    from experiments.runs.registry import _normalized_source

    a = "def f(x):\n    '''doc'''\n    return x + 1  # note\n"
    b = "def f(x):\n\n    return (x + 1)\n"
    c = "def f(x):\n    return x + 2\n"
    assert _normalized_source(a) == _normalized_source(b) != _normalized_source(c)
    spec = REGISTRY["head_scan"].fingerprint()
    assert spec["analysis_version"] == str(REGISTRY["head_scan"].version) and len(spec["code_hash"]) == 16


def test_code_hash_ignores_where_names_are_imported_from_but_not_what_the_code_does():
    from experiments.runs.registry import _normalized_source

    moved = "from pkg.old import helper\n\ndef f(x):\n    import math\n    return helper(x) + math.pi\n"
    here = "import math\n\nfrom pkg.new_home import helper\n\ndef f(x):\n    return helper(x) + math.pi\n"
    changed = "from pkg.new_home import helper\n\ndef f(x):\n    return helper(x) - 1\n"
    assert _normalized_source(moved) == _normalized_source(here) != _normalized_source(changed)


# ------------------------------------------------------------------------------ 3. demo --fresh
def test_demo_fresh_removes_only_this_study(clean, tmp_path, monkeypatch):
    """Audit: `iclwb demo --fresh --out DIR` deleted DIR whole: other sweeps' units and a user's
    NOTES.md with it."""
    from experiments.runs import demo

    cfg, store, ref = fresh_copy(clean, tmp_path)
    other = loads_config(checksum_config(2).replace("[grid.params.checksum]", "[grid.params.checksum]\nn = 2"),
                         name="other")
    assert len(run_sweep(other, store, progress=False).computed) == 2
    other_files = {p: p.read_bytes() for p in store.root.rglob("*") if p.is_file()
                   and any(u.key in p.name for u in other.units())}
    (store.root / "NOTES.md").write_text("my notes\n")
    (store.root / "report.html").write_text("old report")
    before = {u.key: store.unit_path(u.key).stat().st_mtime_ns for u in cfg.units()}
    monkeypatch.setattr(demo, "demo_config", lambda quick: (loads_config(cfg.source), []))
    assert demo.run_demo(quick=True, out_dir=str(store.root), fresh=True, progress=False) == 0
    assert (store.root / "NOTES.md").read_text() == "my notes\n"
    assert all(p.read_bytes() == b for p, b in other_files.items())
    assert all(store.unit_path(k).stat().st_mtime_ns != t for k, t in before.items())  # recomputed
    assert "old report" not in (store.root / "report.html").read_text()
    assert frame_of(store)[lambda d: d["unit_key"].isin(before)].reset_index(drop=True).equals(ref)


# ------------------------------------------------------------------------------ 4. locks
def _drop(store: ResultsStore, key: str) -> None:
    """Delete a finished unit's files (so that a run must compute it again)."""
    store.unit_path(key).unlink()
    store.artefact_path(key).unlink(missing_ok=True)


def _lock(store: ResultsStore, key: str, content: bytes, age_s: float = 0.0) -> Path:
    p = store.lock_path(key)
    p.write_bytes(content)
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


@pytest.fixture
def sleeper():
    """An unrelated live process (its PID is what a foreign-PID lock holds)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("kind", ["garbage", "empty", "foreign-pid", "json-list"])
def test_lock_nobody_holds_is_broken_not_waited_on(clean, tmp_path, capsys, sleeper, kind):
    """Audit: a garbage lock or one holding an unrelated live PID was waited on silently for up
    to 24 h (a sweep sat at 14/15)."""
    cfg, store, ref = fresh_copy(clean, tmp_path)
    key = cfg.units()[3].key
    _drop(store, key)
    me = os.uname().nodename
    content = {"garbage": b"\x00\x17not json{", "empty": b"", "json-list": b"[1, 2]",
               "foreign-pid": json.dumps({"host": me, "pid": sleeper, "started": time.time()}).encode()}[kind]
    # aged past the grace an unreadable lock gets to be written (older writers' window)
    _lock(store, key, content, age_s=60)
    out = status_out(capsys, "--store", str(store.root))
    assert f"lock {key}:" in out and " old: dead" in out, out
    if kind == "foreign-pid":
        assert f"pid {sleeper}" in out
    assert store.read_lock(key).state == "dead"
    t0 = time.time()
    rep = run_sweep(cfg, store, progress=False)
    assert time.time() - t0 < 20 and rep.computed == [key]
    assert frame_of(store).equals(ref) and not list((store.root / "locks").iterdir())


def test_fresh_empty_lock_is_not_broken_at_once(clean, tmp_path):
    """Audit: an empty lock (a live owner between creating the file and writing it) counted as
    stale, so a second sweep broke it: 41 computations for 40 units."""
    cfg, store, _ = fresh_copy(clean, tmp_path)
    key = cfg.units()[0].key
    _drop(store, key)
    _lock(store, key, b"")
    assert not store.claim(key)  # given LOCK_GRACE_S to get its content
    assert store.read_lock(key).state == "new"
    os.utime(store.lock_path(key), (time.time() - 60, time.time() - 60))
    assert store.claim(key)
    store.release(key)
    assert not store.lock_path(key).exists()


def test_our_locks_are_complete_when_they_appear_and_live_while_held(tmp_path):
    store = ResultsStore(tmp_path / "res")
    assert store.claim("k1")
    d = json.loads(store.lock_path("k1").read_text())
    assert d["host"] == os.uname().nodename and d["pid"] == os.getpid() and d["proc_start"]
    assert store.read_lock("k1").state == "live"
    # another process (or store object) cannot take or break it; unlock without --force leaves it
    assert not ResultsStore(tmp_path / "res").claim("k1")
    assert ResultsStore(tmp_path / "res").unlock() == []
    assert store.lock_path("k1").exists()
    # a live lock is only broken by force; its owner's release then leaves a new owner's lock alone
    assert [i.key for i in ResultsStore(tmp_path / "res").unlock(force=True)] == ["k1"]
    other = ResultsStore(tmp_path / "res")
    assert other.claim("k1")
    store.release("k1")
    assert other.lock_path("k1").exists() and other.read_lock("k1").state == "live"
    other.release("k1")
    assert not list((tmp_path / "res" / "tmp").iterdir())


LOCK_HOLDER = """
import sys, time
from experiments.runs.store import ResultsStore
s = ResultsStore(sys.argv[1])
assert s.claim(sys.argv[2])
print("held", flush=True)
time.sleep(120)
"""


@pytest.mark.slow
def test_live_lock_in_status_and_unlock_command(tmp_path, capsys):
    from experiments.cli.main import main

    store = ResultsStore(tmp_path / "res")
    holder = subprocess.Popen([PY, "-c", LOCK_HOLDER, str(store.root), "kx"], env=env(), cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _lock(store, "kdead", b"junk", age_s=30)
        out = status_out(capsys, "--store", str(store.root))
        assert f"lock kx: host {os.uname().nodename} pid {holder.pid}" in out and "live" in out, out
        assert "lock kdead: unreadable lock file" in out and "sweep unlock" in out
        assert main(["sweep", "unlock", "--store", str(store.root)]) == 0
        out = capsys.readouterr().out
        assert "broke lock kdead" in out and "1 left" in out and "--force" in out, out
        assert store.lock_path("kx").exists() and not store.lock_path("kdead").exists()
        assert main(["sweep", "unlock", "kx", "--store", str(store.root), "--force"]) == 0
        assert "broke lock kx" in capsys.readouterr().out and not store.lock_path("kx").exists()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_lock_of_dead_owner_after_kill9_is_broken(tmp_path):
    store = ResultsStore(tmp_path / "res")
    holder = subprocess.Popen([PY, "-c", LOCK_HOLDER, str(store.root), "kk"], env=env(), cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert store.read_lock("kk").state == "live" and not store.claim("kk")
    holder.kill()
    holder.wait()
    assert store.read_lock("kk").state == "dead"
    assert store.claim("kk")
    store.release("kk")


def test_other_host_lock_is_waited_on_with_a_message(clean, tmp_path, capsys):
    cfg, store, _ = fresh_copy(clean, tmp_path)
    key = cfg.units()[0].key
    _drop(store, key)
    _lock(store, key, json.dumps({"host": "elsewhere.example", "pid": 1, "started": time.time()}).encode())
    store.stale_after_s = 1.5  # (24 h by default)
    rep = run_sweep(cfg, store, progress=False)
    err = capsys.readouterr().err
    assert store.read_lock(key) is None
    assert f"waiting for unit {key}" in err and "host elsewhere.example" in err and "unlock" in err, err
    assert rep.computed == [key]


# ------------------------------------------------------------------------------ 5. filters
def test_results_seed_zero_and_k_zero_filter(tmp_path, capsys):
    """Audit: `sweep results --seed 0` and `--k 0` ignored the filter (0 taken for "none")."""
    from experiments.cli.main import main

    if "probe_k" not in REGISTRY:
        register(AnalysisSpec(name="probe_k", fn=lambda *a: pd.DataFrame({"metric": ["k"], "value": [a[2]]}),
                              params={}, uses_task=True, uses_k=True))
    store = ResultsStore(tmp_path / "res")
    run_sweep(loads_config(checksum_config(3)), store, progress=False)
    run_sweep(loads_config('seeds = [0, 1]\nmodels = ["induction-2l"]\ntasks = ["induction"]\nk = [1, 2]\n'
                           'analyses = ["probe_k"]'), store, progress=False)
    dest = tmp_path / "out.csv"
    for flag, col, n in (("--seed", "seed", 3 + 2), ("--k", "k", 9)):
        assert main(["sweep", "results", "--store", str(store.root), flag, "0", "--export", str(dest)]) == 0
        df = pd.read_csv(dest)
        assert len(df) == n and set(df[col]) == {0}, (flag, df[col].tolist())
    capsys.readouterr()


# ------------------------------------------------------------------------------ 13. quoted paths
def test_store_path_with_quotes_and_glob_characters(tmp_path, capsys):
    """Audit: a quote in the store path broke every query in the CLI and the app (the path was
    pasted into DuckDB SQL)."""
    from experiments.cli.main import main
    from iclwb_app.results_view import load_results

    root = tmp_path / "it's a \"store\" [1] *"
    cfg_path = write(tmp_path, checksum_config(2))
    assert main(["sweep", "run", str(cfg_path), "--store", str(root), "--workers", "1", "--quiet"]) == 0
    store = ResultsStore(root)
    assert len(store.frame(seed=1)) == 3
    assert store.sql("SELECT count(*) AS n FROM results")["n"][0] == 6
    assert main(["sweep", "results", "--store", str(root), "--sql", "SELECT sum(seed) AS s FROM results"]) == 0
    assert "3" in capsys.readouterr().out
    assert "2/2 done" in status_out(capsys, str(cfg_path), "--store", str(root))
    assert len(load_results(root)) == 6


# ------------------------------------------------------------------------------ kill -9, writers
def _cli_run(cfg_path: Path, store_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "experiments.cli.main", "sweep", "run", str(cfg_path), "--store",
                             str(store_dir), "--workers", "1", "--quiet"], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_kill9_at_random_points_across_runs_converges(tmp_path, capsys):
    n = 8
    cfg_path = write(tmp_path, checksum_config(n, sleep=0.25))
    cfg = loads_config(cfg_path.read_text())
    ref = ResultsStore(tmp_path / "ref")
    run_sweep(cfg, ref, progress=False)
    store_dir = tmp_path / "res"
    rng = random.Random(17)
    finished: dict[str, tuple[int, bytes]] = {}
    for _ in range(4):
        proc = _cli_run(cfg_path, store_dir)
        time.sleep(rng.uniform(1.5, 4.0))  # start-up is ~1.5-3 s, then a unit every ~0.3 s
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        store = ResultsStore(store_dir)
        # status tells the truth: nothing damaged, every finished file is a complete unit
        assert not store.damaged()
        done = store.finished_keys()
        units_dir = store_dir / "units"
        assert {p.stem for p in units_dir.glob("*.parquet")} == done
        out = status_out(capsys, str(cfg_path), "--store", str(store_dir))
        assert f"{len(done)}/{n} done" in out, out
        # a unit finished by an earlier run is never rewritten
        for key, (mt, data) in finished.items():
            assert store.unit_path(key).stat().st_mtime_ns == mt and store.unit_path(key).read_bytes() == data
        finished.update({k: (store.unit_path(k).stat().st_mtime_ns, store.unit_path(k).read_bytes()) for k in done})
    rep = run_sweep(cfg, ResultsStore(store_dir), progress=False)
    assert rep.ok and sorted(rep.computed) == sorted(u.key for u in cfg.units() if u.key not in finished)
    assert frame_of(ResultsStore(store_dir)).equals(frame_of(ref))
    assert not list((store_dir / "locks").iterdir()) and not list((store_dir / "tmp").iterdir())
    assert f"{n}/{n} done" in status_out(capsys, str(cfg_path), "--store", str(store_dir))


@pytest.mark.slow
@pytest.mark.parametrize("writers", [2, 3])
def test_concurrent_writers_compute_each_unit_once(tmp_path, writers):
    n = 9
    cfg_path = write(tmp_path, checksum_config(n, sleep=0.3))
    cfg = loads_config(cfg_path.read_text())
    ref = ResultsStore(tmp_path / "ref")
    run_sweep(cfg, ref, progress=False)
    store_dir = tmp_path / "res"
    procs = [_cli_run(cfg_path, store_dir) for _ in range(writers)]
    outs = [p.communicate(timeout=200) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    computed = [int(o[0].split(" units; ")[1].split(" computed")[0]) for o in outs]
    assert sum(computed) == n, outs
    store = ResultsStore(store_dir)
    assert frame_of(store).equals(frame_of(ref)) and not store.damaged()
    assert store.frame().drop_duplicates("unit_key")["run_id"].nunique() == sum(c > 0 for c in computed)
    assert not list((store_dir / "locks").iterdir()) and not list((store_dir / "tmp").iterdir())


def test_a_flip_inside_the_checksum_mark_is_damage_not_an_old_format(clean, tmp_path):
    """Found by flipping every byte of a unit: a flip inside the ``iclwb-sha256:`` mark hid the
    checksum, and the file then passed for an unchecked format-1 unit."""
    from experiments.runs.unitfile import CHECKSUM_MARK

    cfg, store, _ = fresh_copy(clean, tmp_path)
    key = cfg.units()[0].key
    path = store.unit_path(key)
    good = path.read_bytes()
    start = good.rfind(CHECKSUM_MARK)
    for offset in range(start, start + len(CHECKSUM_MARK) + 64):
        path.write_bytes(good)
        flip_byte(path, offset)
        assert store.problem(key) is not None, f"flip at byte {offset} (checksum mark) went unnoticed"
    path.write_bytes(good)
    assert store.problem(key) is None
