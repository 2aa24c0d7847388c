"""Sweeps: config validation, resumable runs, kill-and-resume, two sweeps on one store, executors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from experiments.runs import ResultsStore, SweepConfigError, loads_config, run_sweep
from experiments.runs.store import PROVENANCE_COLUMNS
from tests.unit.test_sweep_helpers import expected_value

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable


def checksum_config(n_seeds: int, sleep: float = 0.0, name: str = "t") -> str:
    return textwrap.dedent(f"""
        name = "{name}"
        imports = ["tests.unit.test_sweep_helpers"]
        seeds = {list(range(n_seeds))}
        [[grid]]
        models = ["induction-2l"]
        analyses = ["checksum"]
        [grid.params.checksum]
        sleep = {sleep}
        """)


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([PY, "-m", "experiments.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------ configs
BAD_CONFIGS = {
    "unknown model": ('models = ["gpt-17"]\nanalyses = ["head_scan"]', "models[0]", "unknown model 'gpt-17'"),
    "unknown analysis": ('models = ["induction-2l"]\nanalyses = ["telepathy"]', "analyses[0]",
                         "allowed: "),
    "wrong type": ('models = ["induction-2l"]\nanalyses = ["head_scan"]\nseeds = ["one"]', "seeds[0]",
                   "expected integer"),
    "wrong param type": ('models = ["induction-2l"]\nanalyses = ["head_scan"]\n[params.head_scan]\n'
                         'seg_len = 2.5', "params.head_scan", "must be int"),
    "unknown task": ('models = ["induction-2l"]\ntasks = ["poetry"]\nk = [2]\nanalyses = ["circuit"]',
                     "tasks[0]", "unknown task 'poetry'; allowed: "),
    "language without dataset": ('models = ["smollm2-135m"]\ntasks = ["language"]\nk = [2]\n'
                                 'analyses = ["circuit"]', "tasks[0]", "language:DATASET"),
    "analysis does not apply": ('models = ["linreg-lsa-1l"]\nanalyses = ["head_scan"]', "head_scan",
                                "reads vectors, not tokens"),
    "k negative": ('models = ["induction-2l"]\ntasks = ["classify"]\nk = [-1]\nanalyses = ["circuit"]',
                   "k[0]", ">= 0"),
    "unknown field": ('models = ["induction-2l"]\nanalysis = ["head_scan"]', "analysis", "allowed fields"),
    "unknown param": ('models = ["induction-2l"]\nanalyses = ["head_scan"]\n[params.head_scan]\n'
                      'layers = 3', "params.head_scan", "allowed: "),
    "bad fv scale": ('models = ["icl-classify"]\ntasks = ["classify"]\nk = [2]\nanalyses = ["vectors"]\n'
                     '[params.vectors]\nfv_scales = [1.0, -2.0]', "vectors", "positive numbers"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_names_the_field(case):
    text, field, phrase = BAD_CONFIGS[case]
    with pytest.raises(SweepConfigError) as err:
        loads_config(text)
    msg = str(err.value)
    assert field in msg and phrase in msg, msg
    assert "\n" not in msg


def _k_test_analysis():
    from experiments.runs.registry import REGISTRY, AnalysisSpec, register

    if "probe_k" not in REGISTRY:
        register(AnalysisSpec(name="probe_k", fn=lambda *a: pd.DataFrame({"metric": ["k"], "value": [a[2]]}),
                              params={}, uses_task=True, uses_k=True))


def test_k_larger_than_context_is_rejected():
    _k_test_analysis()
    text = ('[[grid]]\nmodels = ["induction-2l"]\ntasks = ["induction"]\nk = [1, 50]\n'
            'analyses = ["probe_k"]')
    with pytest.raises(SweepConfigError) as err:
        loads_config(text)
    msg = str(err.value)
    assert "grid[0].k[1]" in msg and "n_ctx=64" in msg and "k <= " in msg, msg
    # the largest k it names really fits, and one more does not
    kmax = int(msg.rsplit("k <= ", 1)[1].split()[0].rstrip(".;"))
    from experiments.runs.modelinfo import prompt_len

    assert prompt_len("induction-2l", "induction", kmax) <= 64 < prompt_len("induction-2l", "induction", kmax + 1)
    assert len(loads_config(text.replace(", 50", "")).units()) == 1


def test_cli_bad_configs_exit_nonzero_before_any_work(tmp_path, capsys):
    from experiments.cli.main import main

    for i, case in enumerate(["unknown model", "unknown analysis", "wrong type", "unknown task"]):
        cfg = write(tmp_path, BAD_CONFIGS[case][0], f"bad{i}.toml")
        store = tmp_path / f"store{i}"
        assert main(["sweep", "run", str(cfg), "--store", str(store)]) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("iclwb: error:"), err
        assert BAD_CONFIGS[case][1] in lines[0]
        assert not store.exists()


@pytest.mark.slow
def test_iclwb_process_exit_status_on_bad_config(tmp_path):
    cfg = write(tmp_path, BAD_CONFIGS["unknown model"][0])
    r = cli("sweep", "run", str(cfg), "--store", str(tmp_path / "store"), timeout=300)
    assert r.returncode == 2 and r.stderr.strip().startswith("iclwb: error: config.models[0]"), r.stderr
    assert not (tmp_path / "store").exists()


def test_units_expand_grid_and_dedupe():
    cfg = loads_config(textwrap.dedent("""
        seeds = [0, 1]
        imports = ["tests.unit.test_sweep_helpers"]
        [[grid]]
        models = ["induction-2l"]
        analyses = ["checksum", "head_scan"]
        [[grid]]
        models = ["induction-2l"]
        analyses = ["checksum"]
        seeds = [1, 2]
        """))
    units = cfg.units()
    # checksum: seeds {0,1,2}; head_scan: seeds {0,1}; the shared (checksum, seed 1) only once
    assert sorted((u.analysis, u.seed) for u in units) == [
        ("checksum", 0), ("checksum", 1), ("checksum", 2), ("head_scan", 0), ("head_scan", 1)]
    assert len({u.key for u in units}) == 5
    assert all(u.task == "" and u.k == 0 for u in units)
    # the hash ignores formatting and comments
    again = loads_config("# comment\n" + cfg.source.replace("seeds = [0, 1]", "seeds=[0,1]"))
    assert again.config_hash == cfg.config_hash


# ------------------------------------------------------------------------------------ store
def test_run_store_provenance_and_resume(tmp_path):
    from experiments.models import zoo
    from experiments.runs.modelinfo import file_hash

    cfg = loads_config(checksum_config(3))
    store = ResultsStore(tmp_path / "res")
    rep = run_sweep(cfg, store, progress=False)
    assert rep.ok and len(rep.computed) == 3 and rep.already_done == 0
    df = store.frame()
    assert set(PROVENANCE_COLUMNS) <= set(df.columns)
    assert len(df) == 9
    sha = file_hash(zoo.checkpoint_path("induction-2l") / "model.safetensors")
    assert (df["model_hash"] == sha).all()
    assert (df["config_hash"] == cfg.config_hash).all() and (df["sweep"] == "t").all()
    assert df["versions"].str.contains("torch").all() and (df["wall_time_s"] >= 0).all()
    for _, row in df.iterrows():
        assert row["value"] == pytest.approx(expected_value("induction-2l", int(row["seed"]), int(row["i"])))
    # DuckDB and pandas see the same rows
    agg = store.sql("SELECT seed, sum(value) AS s FROM results GROUP BY seed ORDER BY seed")
    assert agg["s"].tolist() == pytest.approx(df.groupby("seed")["value"].sum().sort_index().tolist())
    # tensors beside the table
    u = cfg.units()[0]
    import torch

    t = store.tensors(u.key)["noise"]
    assert torch.equal(t, torch.randn(3, 4, generator=torch.Generator().manual_seed(u.seed)))
    # a finished sweep recomputes nothing
    rep2 = run_sweep(cfg, store, progress=False)
    assert rep2.computed == [] and rep2.already_done == 3
    # a larger sweep computes only the new units
    rep3 = run_sweep(loads_config(checksum_config(5)), store, progress=False)
    assert len(rep3.computed) == 2 and rep3.already_done == 3
    assert not list((tmp_path / "res" / "tmp").iterdir()) and not list((tmp_path / "res" / "locks").iterdir())


def test_failed_unit_is_reported_and_retried(tmp_path):
    from experiments.runs.registry import REGISTRY, AnalysisSpec, register

    flag = tmp_path / "fail"
    flag.write_text("1")

    def flaky(model, task, k, seed, params):
        if Path(params["flag"]).exists():
            raise RuntimeError("boom")
        return pd.DataFrame({"metric": ["x"], "value": [1.0]})

    register(AnalysisSpec(name="flaky", fn=flaky, params={"flag": ""}, uses_task=False, uses_k=False))
    try:
        cfg = loads_config(f'models = ["induction-2l"]\nanalyses = ["flaky"]\n[params.flaky]\nflag = "{flag}"')
        store = ResultsStore(tmp_path / "res")
        rep = run_sweep(cfg, store, progress=False)
        assert not rep.ok and "boom" in next(iter(rep.failed.values()))
        assert store.errors() and not store.finished_keys()
        flag.unlink()
        rep = run_sweep(cfg, store, progress=False)
        assert rep.ok and len(rep.computed) == 1 and not store.errors()
    finally:
        REGISTRY.pop("flaky", None)


def _wait_for(pred, timeout: float, what: str):
    t0 = time.time()
    while not pred():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_computes_only_missing(tmp_path):
    n = 12
    cfg_path = write(tmp_path, checksum_config(n, sleep=0.4))
    store_dir = tmp_path / "res"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PY, "-m", "experiments.cli.main", "sweep", "run", str(cfg_path), "--store",
                             str(store_dir), "--workers", "1", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    units_dir = store_dir / "units"
    try:
        _wait_for(lambda: units_dir.is_dir() and len(list(units_dir.glob("*.parquet"))) >= 3, 90,
                  "three finished units")
        time.sleep(0.2)  # land somewhere inside a unit
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in units_dir.glob("*.parquet")}
    assert 3 <= len(before) < n, "the kill must land mid-run"
    # every file present is a complete, readable unit; the killed run left its lock behind
    for name in before:
        assert len(pd.read_parquet(units_dir / name)) == 3
    cfg = loads_config(cfg_path.read_text())
    rep = run_sweep(cfg, ResultsStore(store_dir), progress=False)
    assert rep.ok
    assert rep.already_done == len(before)
    assert sorted(rep.computed) == sorted(u.key for u in cfg.units() if f"{u.key}.parquet" not in before)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in units_dir.glob("*.parquet")}
    assert len(after) == n
    assert all(after[k] == v for k, v in before.items()), "finished units were rewritten"
    assert not list((store_dir / "locks").glob("*.lock")), "the killed run's lock is cleared"
    df = ResultsStore(store_dir).frame()
    assert len(df) == 3 * n
    for _, row in df.iterrows():
        assert row["value"] == pytest.approx(expected_value("induction-2l", int(row["seed"]), int(row["i"])))
    # and a third run computes nothing
    assert run_sweep(cfg, ResultsStore(store_dir), progress=False).computed == []


@pytest.mark.slow
def test_two_sweeps_on_one_store_no_corruption_no_duplicate_work(tmp_path):
    n = 10
    cfg_path = write(tmp_path, checksum_config(n, sleep=0.3))
    store_dir = tmp_path / "res"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [PY, "-m", "experiments.cli.main", "sweep", "run", str(cfg_path), "--store", str(store_dir),
            "--workers", "1", "--quiet"]
    procs = [subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=150) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    df = ResultsStore(store_dir).frame()
    assert len(df) == 3 * n and df["unit_key"].nunique() == n
    for _, row in df.iterrows():
        assert row["value"] == pytest.approx(expected_value("induction-2l", int(row["seed"]), int(row["i"])))
    # each unit was computed exactly once in all: the two runs' "computed" counts add up to n
    computed = [int(o[0].split(" units; ")[1].split(" computed")[0]) for o in outs]
    assert sum(computed) == n, outs
    assert df["run_id"].nunique() == sum(c > 0 for c in computed)
    assert not list((store_dir / "tmp").iterdir()) and not list((store_dir / "locks").iterdir())


@pytest.mark.slow
def test_process_pool_equals_inline(tmp_path):
    cfg = loads_config(checksum_config(4))
    a = run_sweep(cfg, ResultsStore(tmp_path / "a"), workers=1, progress=False)
    b = run_sweep(cfg, ResultsStore(tmp_path / "b"), workers=2, progress=False)
    assert a.ok and b.ok and len(b.computed) == 4
    fa, fb = (ResultsStore(tmp_path / x).frame().sort_values(["seed", "i"]).reset_index(drop=True)
              for x in "ab")
    assert fa["value"].tolist() == fb["value"].tolist()
    assert fb["pid"].nunique() >= 1 and (fb["pid"] != os.getpid()).all()  # computed in workers


@pytest.mark.slow
def test_ray_executor_equals_local(tmp_path):
    import ray

    cfg = loads_config(checksum_config(3))
    local = run_sweep(cfg, ResultsStore(tmp_path / "local"), progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}})
    try:
        rep = run_sweep(cfg, ResultsStore(tmp_path / "ray"), executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert local.ok and rep.ok and len(rep.computed) == 3
    cols = ["seed", "metric", "i", "value"]
    fl, fr = (ResultsStore(tmp_path / x).frame().sort_values(cols).reset_index(drop=True)
              for x in ("local", "ray"))
    assert fl[cols].equals(fr[cols])
    assert (fr["pid"] != os.getpid()).all()  # computed in Ray workers, not in the driver
    import torch

    for u in cfg.units():
        assert torch.equal(ResultsStore(tmp_path / "local").tensors(u.key)["noise"],
                           ResultsStore(tmp_path / "ray").tensors(u.key)["noise"])


def test_unit_from_a_changed_checkpoint_is_recomputed(tmp_path):
    cfg = loads_config(checksum_config(2))
    store = ResultsStore(tmp_path / "res")
    assert len(run_sweep(cfg, store, progress=False).computed) == 2
    u = cfg.units()[0]
    # pretend unit u was computed from another checkpoint (as after `iclwb zoo train`)
    df = store.read_unit(u.key)
    prov = {**store.stored_provenance(u.key), "model_hash": "0" * 64}
    store.write_unit(u, df.drop(columns=list(PROVENANCE_COLUMNS)), prov)
    assert store.stored_provenance(u.key)["model_hash"] == "0" * 64
    rep = run_sweep(cfg, store, progress=False)
    assert rep.computed == [u.key] and rep.outdated == [u.key]
    assert store.stored_provenance(u.key)["model_hash"] != "0" * 64
    assert run_sweep(cfg, store, progress=False).computed == []


def test_cli_status_results_and_export(tmp_path, capsys):
    from experiments.cli.main import main

    cfg_path = write(tmp_path, checksum_config(3))
    store = tmp_path / "res"
    assert main(["sweep", "run", str(cfg_path), "--store", str(store), "--workers", "1", "--quiet"]) == 0
    assert "3 computed" in capsys.readouterr().out
    assert main(["sweep", "status", str(cfg_path), "--store", str(store)]) == 0
    assert "3/3 done" in capsys.readouterr().out
    assert main(["sweep", "results", "--store", str(store), "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "checksum" in out and len([ln for ln in out.splitlines() if "checksum" in ln]) == 3
    for ext in ("csv", "parquet"):
        dest = tmp_path / f"out.{ext}"
        assert main(["sweep", "results", "--store", str(store), "--analysis", "checksum",
                     "--export", str(dest)]) == 0
        back = pd.read_csv(dest) if ext == "csv" else pd.read_parquet(dest)
        assert len(back) == 9 and set(PROVENANCE_COLUMNS) <= set(back.columns)
    assert main(["sweep", "results", "--store", str(store), "--sql",
                 "SELECT count(*) AS n FROM results WHERE seed = 2"]) == 0
    assert capsys.readouterr().out.split()[-1] == "3"
    # an empty or missing store is one clear line, not a traceback
    assert main(["sweep", "results", "--store", str(tmp_path / "nowhere")]) == 2
    assert "is not a results store" in capsys.readouterr().err


@pytest.mark.slow
def test_pool_workers_exit_when_driver_is_killed(tmp_path):
    cfg_path = write(tmp_path, checksum_config(6, sleep=0.8))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PY, "-m", "experiments.cli.main", "sweep", "run", str(cfg_path), "--store",
                             str(tmp_path / "res"), "--workers", "2", "--quiet"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    locks = tmp_path / "res" / "locks"
    _wait_for(lambda: locks.is_dir() and len(list(locks.glob("*.lock"))) >= 2, 90, "two units in flight")
    kids = children()
    assert kids
    os.kill(proc.pid, signal.SIGKILL)  # the driver only, as `kill -9 PID` would
    proc.wait(timeout=10)
    _wait_for(lambda: not any(_alive(k) for k in kids), 20, "orphaned workers to exit")
    # and the interrupted units are recomputed by the next run
    rep = run_sweep(loads_config(cfg_path.read_text()), ResultsStore(tmp_path / "res"), progress=False)
    assert rep.ok and len(ResultsStore(tmp_path / "res").finished_keys()) == 6


def _alive(pid: int) -> bool:
    from experiments.runs.locks import _pid_alive

    return _pid_alive(pid)


def test_head_tables_put_each_row_at_its_layer_and_head():
    from experiments.runs.analyses.circuit import head_tables

    rows = [{"step": "retrieve", "metric": "C", "layer": l, "head": h, "value": 10 * l + h}
            for l in range(3) for h in range(2)]
    rows.append({"step": "ablation", "metric": "acc:unablated", "layer": -1, "head": -1, "value": 0.5})
    rows.append({"step": "merge", "metric": "partial", "layer": 0, "head": 0, "value": 1.0})
    t = head_tables(pd.DataFrame(rows), 3, 2)
    assert set(t) == {"retrieve/C"}  # incomplete grids and non-head rows are left out
    assert t["retrieve/C"].tolist() == [[0, 1], [10, 11], [20, 21]]
