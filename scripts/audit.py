"""Replay the automatable cases of issue 17's reliability audit and classify each outcome.

    OMP_NUM_THREADS=1 PYTHONPATH=REPO python scripts/audit.py [--timeout S] [--only 1,9] [-v]

``REPO`` is the checkout under test (this one, or e.g. an old commit checked out with
``git worktree add /tmp/audit-old e3903d1``); the script imports ``experiments`` from there, so one
copy of this script audits any version. Each case runs in a forked child (the parent imports the
libraries once) with a time limit; its outcome is one of

- ``clear_error``: refused with the project's own error (a one-line CLI error naming the fix);
- ``traceback``: an uncaught exception (a traceback on the CLI, an exception box in the app);
- ``silent_wrong``: finished without complaint but with a wrong result;
- ``hang``: ran past its time limit or exhausted memory;
- ``data_loss``: deleted or damaged files it did not own;
- ``ok``: did the right thing.

Every case states the outcome the issue asks for (``expect``); ``as_expected`` counts the cases
that got it. Issue 24's cases (item 24) check that every reader shows one run per cell.
Items 1-5 and 13 (results store) are the store engineer's; item 8 (a statistics
question) has no automatable case here. The counts are printed last, one per line, as
``name: value``. Cost: 2-4 minutes of CPU, 5-8 of wall time on 2 busy cores (one sweep of 15 units,
then 52 short cases; the old code's hangs wait out their limits).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LAST_CLI: list[str] = [""]
"""The last line the last CLI run wrote to stderr (shown with -v)."""
OUTCOMES = ("clear_error", "traceback", "silent_wrong", "hang", "data_loss", "ok")
PROJECT = ("probes", "circuits", "experiments", "iclwb_app")
"""Packages whose ValueErrors are the project's own errors (the app's AppInputError included)."""

DUR = """\
name = "dur"
seeds = [0, 1, 2]

[[grid]]
models = ["induction-2l"]
analyses = ["head_scan"]

[[grid]]
models = ["linreg-lsa-1l"]
tasks = ["linreg"]
k = [1, 2, 4, 8]
analyses = ["icl_vs_gd"]
[grid.params.icl_vs_gd]
n_tasks = 128
"""


@dataclass
class Case:
    item: int
    name: str
    fn: Callable[["Ctx"], str | None]
    expect: str = "clear_error"
    timeout: float | None = None


CASES: list[Case] = []


def case(item: int, name: str, expect: str = "clear_error", timeout: float | None = None):
    def deco(fn):
        CASES.append(Case(item, name, fn, expect, timeout))
        return fn
    return deco


class Ctx:
    """What a case gets: a private folder, a copy of the reference store, helpers."""

    def __init__(self, work: Path, dur_store: Path, dur_config: Path):
        self.work = work
        self.dur_store = dur_store
        self.dur_config = dur_config

    def store_copy(self, name: str = "store") -> Path:
        dst = self.work / name
        shutil.copytree(self.dur_store, dst)
        return dst

    def write(self, name: str, text: str) -> Path:
        p = self.work / name
        p.write_text(text)
        return p


# ------------------------------------------------------------------------------------- helpers
def cli(*argv: str) -> tuple[int, str, str]:
    """Run ``iclwb ARGV`` in this process: (exit status, stdout, stderr). Uncaught exceptions
    propagate (the harness counts them as tracebacks)."""
    from experiments.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(list(argv))
        except SystemExit as stop:
            rc = stop.code if isinstance(stop.code, int) else 1
    lines = err.getvalue().strip().splitlines()
    LAST_CLI[0] = f"exit {rc}: {lines[-1][:200]}" if lines else f"exit {rc}"
    return int(rc or 0), out.getvalue(), err.getvalue()


def cli_outcome(rc: int, out: str, err: str, ok: Callable[[str, str], bool] | None = None) -> str:
    """A CLI run: a non-zero exit with an error line and no traceback is a clear error; exit 0 is
    ``ok`` when ``ok(out, err)`` holds, else a silent wrong result."""
    if "Traceback" in err:
        return "traceback"
    if rc != 0:
        last = err.strip().splitlines()[-1] if err.strip() else ""
        return "clear_error" if "error" in last.lower() and len(last) > 20 else "traceback"
    if ok is None:
        return "silent_wrong"
    return "ok" if ok(out, err) else "silent_wrong"


def is_project_error(err: BaseException) -> bool:
    return isinstance(err, ValueError) and type(err).__module__.split(".")[0] in PROJECT


def parquet_ok(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.read_table(path)
        return True
    except Exception:
        return False


def unit_files(store: Path) -> list[Path]:
    return sorted((store / "units").glob("*.parquet"))


def unit_of(store: Path, analysis: str, seed: int) -> Path:
    import pyarrow.parquet as pq

    for p in unit_files(store):
        meta = json.loads((pq.read_schema(p).metadata or {}).get(b"iclwb.unit", b"{}"))
        if meta.get("analysis") == analysis and int(meta.get("seed", -1)) == seed:
            return p
    raise LookupError(f"no {analysis} unit with seed {seed}")


def export_rows(store: Path, *args: str) -> "tuple[str, object]":
    """``sweep results --export`` to CSV: (outcome if it failed else '', DataFrame or None)."""
    import pandas as pd

    out = store.parent / f"export-{time.monotonic_ns()}.csv"
    rc, o, e = cli("sweep", "results", "--store", str(store), *args, "--export", str(out))
    if rc != 0 or not out.exists():
        return cli_outcome(rc, o, e) if rc else "silent_wrong", None
    return "", pd.read_csv(out)


# ============================================================================ items 1-5, 13: store
@case(1, "status after a unit file is truncated reports it", expect="ok")
def _damaged_status(ctx: Ctx):
    s = ctx.store_copy()
    with open(unit_files(s)[0], "r+b") as f:
        f.truncate(100)
    rc, out, err = cli("sweep", "status", str(ctx.dur_config), "--store", str(s))
    text = (out + err).lower()
    return cli_outcome(rc, out, err, ok=lambda o, e: "damaged" in text or "corrupt" in text)


@case(1, "results after a unit file is truncated skip and name it", expect="ok")
def _damaged_results(ctx: Ctx):
    s = ctx.store_copy()
    with open(unit_files(s)[0], "r+b") as f:
        f.truncate(100)
    rc, out, err = cli("sweep", "results", "--store", str(s), "--limit", "5")
    return cli_outcome(rc, out, err, ok=lambda o, e: bool(o.strip()))


@case(1, "run after a unit file is truncated recomputes it", expect="ok")
def _damaged_rerun(ctx: Ctx):
    s = ctx.store_copy()
    victim = unit_files(s)[0]
    with open(victim, "r+b") as f:
        f.truncate(100)
    rc, out, err = cli("sweep", "run", str(ctx.dur_config), "--store", str(s), "--workers", "1", "--quiet")
    if "Traceback" in err:
        return "traceback"
    return "ok" if parquet_ok(victim) else "silent_wrong"


@case(2, "a changed analysis makes its stored units stale", expect="ok")
def _stale(ctx: Ctx):
    import dataclasses

    from experiments.runs.analyses import get_analysis
    from experiments.runs.config import load_config
    from experiments.runs.executors import run_sweep
    from experiments.runs.registry import register

    s = ctx.store_copy()
    spec = get_analysis("head_scan")
    old_fn = spec.fn

    def changed(*a, **k):  # "the analysis's code changed": every score doubles
        res = old_fn(*a, **k)
        res.table["value"] = res.table["value"] * 2
        return res

    changes = {"fn": changed}
    for fld in ("version", "code_version"):  # a versioned registry: the change bumps the version
        if fld in {f.name for f in dataclasses.fields(spec)}:
            cur = getattr(spec, fld)
            changes[fld] = cur + 1 if isinstance(cur, int) else f"{cur}+audit"
    register(dataclasses.replace(spec, **changes))
    report = run_sweep(load_config(ctx.dur_config), str(s), workers=1, progress=False)
    return "ok" if len(report.computed) >= 3 else "silent_wrong"


@case(3, "demo --fresh keeps files the study does not own", expect="ok")
def _fresh(ctx: Ctx):
    import experiments.runs as sweep_pkg
    import experiments.runs.executors as executors
    from experiments.runs.demo import run_demo

    out = ctx.store_copy("demo-out")
    (out / "NOTES.md").write_text("my notes\n")
    others = unit_files(out)

    class Stop(Exception):
        pass

    def stop(*a, **k):
        raise Stop

    sweep_pkg.run_sweep = executors.run_sweep = stop  # only the --fresh clean-up runs
    try:
        run_demo(quick=True, out_dir=str(out), fresh=True)
    except Stop:
        pass
    lost = not (out / "NOTES.md").exists() or not all(p.exists() for p in others)
    return "data_loss" if lost else "ok"


def _lock_case(ctx: Ctx, content: str) -> str:
    s = ctx.store_copy()
    victim = unit_of(s, "head_scan", 0)
    key = victim.stem
    victim.unlink()
    (s / "locks").mkdir(exist_ok=True)
    (s / "locks" / f"{key}.lock").write_text(content)
    rc, out, err = cli("sweep", "run", str(ctx.dur_config), "--store", str(s), "--workers", "1", "--quiet")
    if victim.exists():
        return "ok"
    return cli_outcome(rc, out, err) if rc else "silent_wrong"


@case(4, "a garbage lock is not waited on for 24 h", expect="ok", timeout=25)
def _garbage_lock(ctx: Ctx):
    return _lock_case(ctx, "garbage\x00\x01")


@case(4, "a lock holding an unrelated live PID is not waited on", expect="ok", timeout=25)
def _foreign_lock(ctx: Ctx):
    return _lock_case(ctx, json.dumps({"host": socket.gethostname(), "pid": os.getppid(),
                                       "started": time.time()}))


@case(5, "results --seed 0 filters", expect="ok")
def _seed0(ctx: Ctx):
    bad, df = export_rows(ctx.store_copy(), "--seed", "0")
    return bad or ("ok" if len(df) and set(df["seed"]) == {0} else "silent_wrong")


@case(5, "results --k 0 filters", expect="ok")
def _k0(ctx: Ctx):
    bad, df = export_rows(ctx.store_copy(), "--k", "0")
    return bad or ("ok" if len(df) and set(df["k"]) == {0} else "silent_wrong")


@case(13, "a quote in the store path", expect="ok")
def _quote(ctx: Ctx):
    s = ctx.store_copy("it's a store")
    bad, df = export_rows(s)
    return bad or ("ok" if df is not None and len(df) else "silent_wrong")


# ============================================================================ item 6
def _seg_len_config(ctx: Ctx, seg: int) -> str:
    from experiments.runs.config import load_config
    from experiments.runs.executors import run_sweep

    cfg = ctx.write("seg.toml", f'models = ["induction-2l"]\nanalyses = ["head_scan"]\n'
                                f'[params.head_scan]\nseg_len = {seg}\n')
    report = run_sweep(load_config(cfg), str(ctx.work / "s"), workers=1, progress=False)
    if report.failed:  # refused when the unit runs, with a message
        return "clear_error"
    import pandas as pd

    df = pd.concat([pd.read_parquet(p) for p in unit_files(ctx.work / "s")])
    return "silent_wrong" if not {"previous_token", "induction"} <= set(df["metric"]) else "ok"


@case(6, "head_scan seg_len = 1000 in a sweep")
def _seg1000(ctx: Ctx):
    return _seg_len_config(ctx, 1000)


@case(6, "head_scan seg_len = -7 in a sweep")
def _seg_neg(ctx: Ctx):
    return _seg_len_config(ctx, -7)


@case(6, "head_scan(model, seg_len=1000) through the API")
def _seg_api(ctx: Ctx):
    from experiments.models.loading import load_model
    from experiments.studies.scan import head_scan

    scan = head_scan(load_model("induction-2l"), seg_len=1000)
    return "silent_wrong" if "previous_token" not in scan else "ok"


# ============================================================================ item 7
@case(7, "iclwb scan --top -3")
def _top(ctx: Ctx):
    rc, out, err = cli("scan", "induction-2l", "--top", "-3")
    return cli_outcome(rc, out, err)


@case(7, "resample ablation on a 1-row batch without a reference")
def _resample(ctx: Ctx):
    import torch

    from circuits.interventions import ablate, intervene
    from experiments.models.loading import load_model
    from experiments.tasks import task_batch

    model = load_model("induction-2l")
    batch = task_batch("induction", 1, 1, 0, vocab=64, seg_len=8)
    with torch.no_grad():
        clean = model(batch.tokens)
        with intervene(model, ablate(layers=[0, 1], mode="resample"), batch):
            edited = model(batch.tokens)
    return "silent_wrong" if torch.equal(clean, edited) else "ok"


def _zoo_copy(ctx: Ctx, name: str) -> Path:
    from experiments.models import zoo

    shutil.copytree(zoo.checkpoint_path(name), ctx.work / "zoo" / name)
    return ctx.work / "zoo"


@case(7, "a zoo checkpoint whose bytes were overwritten")
def _nan_zoo(ctx: Ctx):
    import torch

    from experiments.models import zoo

    root = _zoo_copy(ctx, "induction-2l")
    path = root / "induction-2l" / "model.safetensors"
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    start = 8 + n + header[name]["data_offsets"][0]
    raw[start:start + 16] = struct.pack("<4f", *[float("nan")] * 4)
    path.write_bytes(bytes(raw))
    model = zoo.load_zoo_model("induction-2l", root=root)
    finite = all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())
    return "ok" if finite else "silent_wrong"


# ============================================================================ item 9
@case(9, "store at an existing file")
def _store_file(ctx: Ctx):
    f = ctx.write("afile", "x")
    cfg = ctx.write("s.toml", 'models = ["induction-2l"]\nanalyses = ["head_scan"]\n')
    rc, out, err = cli("sweep", "run", str(cfg), "--store", str(f), "--quiet", "--workers", "1")
    return cli_outcome(rc, out, err)


@case(9, "store at an unwritable path")
def _store_unwritable(ctx: Ctx):
    cfg = ctx.write("s.toml", 'models = ["induction-2l"]\nanalyses = ["head_scan"]\n')
    rc, out, err = cli("sweep", "run", str(cfg), "--store", "/proc/iclwb-audit-store", "--quiet", "--workers", "1")
    return cli_outcome(rc, out, err)


@case(9, "iclwb scan on a vector model")
def _scan_vector(ctx: Ctx):
    rc, out, err = cli("scan", "linreg-lsa-1l")
    return cli_outcome(rc, out, err)


LLAMA = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 50,
         "max_position_embeddings": 32, "architectures": ["LlamaForCausalLM"]}


def _checkpoint_dir(ctx: Ctx, config_text: str, weights: str = "good") -> Path:
    import torch
    from safetensors.torch import save_file

    d = ctx.work / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(config_text)
    if weights == "pickle":
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    else:
        save_file({"model.embed_tokens.weight": torch.zeros(50, 16)}, str(d / "model.safetensors"))
        if weights == "truncated":
            p = d / "model.safetensors"
            p.write_bytes(p.read_bytes()[:1000])
    return d


@case(9, "iclwb scan on a folder with a corrupt config.json")
def _cfg_corrupt(ctx: Ctx):
    return cli_outcome(*cli("scan", str(_checkpoint_dir(ctx, json.dumps(LLAMA)[:-9]))))


@case(9, "iclwb scan on a folder with an empty config.json")
def _cfg_empty(ctx: Ctx):
    return cli_outcome(*cli("scan", str(_checkpoint_dir(ctx, ""))))


@case(9, "iclwb scan on a folder with a mistyped config.json")
def _cfg_mistyped(ctx: Ctx):
    return cli_outcome(*cli("scan", str(_checkpoint_dir(ctx, json.dumps({**LLAMA, "model_type": "lama"})))))


@case(9, "iclwb scan on a truncated safetensors file")
def _truncated(ctx: Ctx):
    return cli_outcome(*cli("scan", str(_checkpoint_dir(ctx, json.dumps(LLAMA), "truncated"))))


@case(9, "iclwb scan on a pickle-only checkpoint")
def _pickle(ctx: Ctx):
    return cli_outcome(*cli("scan", str(_checkpoint_dir(ctx, json.dumps(LLAMA), "pickle"))))


@case(9, "sweep results with a bad --sql")
def _bad_sql(ctx: Ctx):
    return cli_outcome(*cli("sweep", "results", "--store", str(ctx.store_copy()), "--sql", "SELEC * FRM results"))


@case(9, "sweep results --export into a missing folder")
def _export_missing(ctx: Ctx):
    return cli_outcome(*cli("sweep", "results", "--store", str(ctx.store_copy()), "--export",
                            str(ctx.work / "missing" / "out.csv")))


@case(9, "PromptBuilder with a several-token label")
def _label_multi(ctx: Ctx):
    from probes.prompt import PromptBuilder

    PromptBuilder().add([0]).demo([1], 2, [3, 4]).query([1], 2).build()
    return "silent_wrong"


@case(9, "PromptBuilder with an out-of-vocabulary label, then read-out")
def _label_oov(ctx: Ctx):
    from experiments.models.loading import load_model
    from probes.prompt import PromptBuilder
    from probes.readout import readout_logits

    batch = PromptBuilder().add([0]).demo([1], 2, 10_000).query([1], 2).build()
    readout_logits(load_model("induction-2l"), batch)
    return "silent_wrong"


def _empty_batch():
    from experiments.models.loading import load_model
    from experiments.tasks import task_batch

    return load_model("induction-2l"), task_batch("induction", 1, 4, 0, vocab=64, seg_len=8).select([])


@case(9, "an empty batch given to the read-out")
def _empty_readout(ctx: Ctx):
    from probes.readout import readout_logits

    readout_logits(*_empty_batch())
    return "silent_wrong"


@case(9, "an empty batch given to capture")
def _empty_capture(ctx: Ctx):
    from probes.capture import capture

    capture(*_empty_batch())
    return "silent_wrong"


@case(9, "an empty batch given to sweep")
def _empty_sweep(ctx: Ctx):
    from circuits.interventions import ablate
    from circuits.sweeps import sweep

    model, batch = _empty_batch()
    sweep(model, batch, [ablate(layers=[0])], lambda logits, b: logits.sum())
    return "silent_wrong"


@case(9, "an empty batch given to model_accuracy")
def _empty_accuracy(ctx: Ctx):
    from probes.readout import model_accuracy

    model_accuracy(*_empty_batch())
    return "silent_wrong"


@case(9, "n_prompts = 0")
def _n0(ctx: Ctx):
    from experiments.tasks import task_batch

    task_batch("classify", 2, 0, 0)
    return "silent_wrong"


@case(9, "head_scan on a vector model through the API")
def _scan_vector_api(ctx: Ctx):
    from experiments.models.loading import load_model
    from experiments.studies.scan import head_scan

    head_scan(load_model("linreg-lsa-1l"))
    return "silent_wrong"


@case(9, "load_model on a garbage string")
def _garbage(ctx: Ctx):
    from experiments.models.loading import load_model

    load_model("\x00garbage")
    return "silent_wrong"


@case(9, "load_model on a truncated file")
def _truncated_file(ctx: Ctx):
    from experiments.models import zoo
    from experiments.models.loading import load_model

    f = ctx.work / "model.safetensors"
    f.write_bytes((zoo.checkpoint_path("induction-2l") / "model.safetensors").read_bytes()[:500])
    load_model(str(f))
    return "silent_wrong"


# ============================================================================ item 10
@case(10, "n_prompts = 100000000", timeout=30)
def _huge(ctx: Ctx):
    from experiments.tasks import task_batch

    task_batch("classify", 4, 100_000_000, 0)
    return "ok"


@case(10, "a 19.7k-character typed prompt in the explorer (30 x 9 heads, memory capped)", timeout=60)
def _long_prompt(ctx: Ctx):
    from experiments.models.zoo import build_model
    from iclwb_app import attention_view, prompting

    # SmolLM2's attention geometry (30 layers x 9 heads) in a tiny random model with a long context
    model = build_model("bridge-native", dict(
        d_model=36, n_layers=30, n_heads=9, d_head=4, n_ctx=8192, d_vocab=64, attn_only=True,
        act_fn="gelu", normalization_type="LN", seed=0))
    text = " ".join(str(i % 64) for i in range(7400))[:19_700]
    batch = prompting.parse_prompt(model, text)
    _cap_memory(3 * 2**30)  # the audit machine had more; the maps alone need ~25 GB
    attention_view.prompt_view(model, batch)
    return "ok"


def _cap_memory(extra: int) -> None:
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra, vm + extra))


# ============================================================================ item 11
def _config_case(ctx: Ctx, text: str) -> str:
    from experiments.runs.config import load_config

    load_config(ctx.write("c.toml", text))
    return "silent_wrong"  # accepted: the mistake would surface only when a unit runs


CIRCUIT = 'models = ["icl-classify"]\ntasks = ["classify"]\nk = [{k}]\nanalyses = ["{a}"]\n'


@case(11, "the example in sweep/config.py's docstring", expect="ok")
def _docstring(ctx: Ctx):
    import experiments.runs.config as config

    doc = config.__doc__
    example = textwrap.dedent(doc[doc.index("::") + 2: doc.index("A *unit*")])
    example = example.replace('imports = ["mypkg.my_analyses"]', '# imports (needs mypkg)')
    config.loads_config(example)
    return "ok"


@case(11, "config with hub name foo/bar (offline)")
def _foo_bar(ctx: Ctx):
    return _config_case(ctx, 'models = ["foo/bar"]\nanalyses = ["head_scan"]\n')


@case(11, 'config with window = ["a", "b"]')
def _window(ctx: Ctx):
    return _config_case(ctx, CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nwindow = ["a", "b"]\n')


@case(11, 'config with subset = "bogus"')
def _subset(ctx: Ctx):
    return _config_case(ctx, CIRCUIT.format(k=2, a="icl_vs_gd") + '[params.icl_vs_gd]\nsubset = "bogus"\n')


@case(11, "config with layers = [99]")
def _layers(ctx: Ctx):
    return _config_case(ctx, CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nlayers = [99]\n')


@case(11, "config with k = 0 for the circuit")
def _k0_circuit(ctx: Ctx):
    return _config_case(ctx, CIRCUIT.format(k=0, a="circuit"))


# ============================================================================ items 12, 14: the app
def _load_results(folder, root):
    import inspect

    from iclwb_app import results_view

    if "root" in inspect.signature(results_view.load_results).parameters:
        return results_view.load_results(folder, root=root)
    return results_view.load_results(folder)  # what the page did: read whatever was typed


def _page_outcome(fn: Callable[[], object], ok: Callable[[object], bool]) -> str:
    """What a page shows: the errors it catches (ui.EXPECTED_ERRORS) as a message, others as an
    exception box (a traceback)."""
    try:
        val = fn()
    except (ValueError, FileNotFoundError, KeyError, OSError) as err:
        return "clear_error" if is_project_error(err) else "traceback"
    return "ok" if ok(val) else "silent_wrong"


@case(12, "Results page given / (whole file system)", timeout=15)
def _slash(ctx: Ctx):
    root = ctx.store_copy()
    return _page_outcome(lambda: _load_results("/", root), lambda df: False)


@case(12, "Results page error messages reveal whether a path exists")
def _reveal(ctx: Ctx):
    root = ctx.store_copy()
    (ctx.work / "exists").mkdir()
    msgs = []
    for p in (ctx.work / "exists", ctx.work / "missing"):
        try:
            _load_results(p, root)
            msgs.append("read")
        except Exception as err:  # noqa: BLE001 - compare whatever the page would show
            msgs.append(str(err).replace(str(p), "PATH"))
    return "silent_wrong" if msgs[0] != msgs[1] else "clear_error"


def _damaged_store(ctx: Ctx) -> Path:
    s = ctx.store_copy()
    with open(unit_files(s)[0], "r+b") as f:
        f.truncate(100)
    return s


@case(14, "Results page on a store with a truncated unit file", expect="ok")
def _page_results(ctx: Ctx):
    s = _damaged_store(ctx)
    return _page_outcome(lambda: _load_results(s, s), lambda df: len(df) > 0)


@case(14, "Circuit page (stored sweep) on a store with a truncated unit file", expect="ok")
def _page_circuit(ctx: Ctx):
    from iclwb_app import circuit_view

    s = _damaged_store(ctx)
    return _page_outcome(lambda: circuit_view.circuit_rows(_load_results(s, s)), lambda df: df is not None)


@case(14, "ICL vs GD page (stored sweep) on a folder of junk .parquet files")
def _page_gd(ctx: Ctx):
    junk = ctx.work / "junk"
    junk.mkdir()
    (junk / "a.parquet").write_bytes(b"PAR1 junk, not a parquet file")
    return _page_outcome(lambda: _load_results(junk, junk), lambda df: False)


# ============================================================================ item 15
def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@case(15, "SIGTERM to iclwb app stops the Streamlit server", expect="ok", timeout=60)
def _sigterm(ctx: Ctx):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli.main", "app", "--results", str(ctx.work), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ctx.work)
    server = None
    try:
        deadline = time.time() + 40
        while time.time() < deadline:  # wait until the server listens
            kids = _children(launcher.pid)
            if kids:
                server = kids[0]
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
            time.sleep(0.2)
        if server is None:
            return "traceback"
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=15)
        time.sleep(3)
        return "silent_wrong" if _alive(server) else "ok"  # an orphan keeps serving
    finally:
        for pid in (launcher.pid, server):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ============================================================================ item 16
@case(16, "model_hash(smollm2-135m) when the hub weights load", expect="ok")
def _hash(ctx: Ctx):
    from experiments.models import pretrained
    from experiments.runs import modelinfo

    snap = ctx.work / "snapshot"
    snap.mkdir()
    (snap / "model.safetensors").write_bytes(b"the hub's weights")
    pretrained.hub_cached = lambda repo=pretrained.HUB_NAME: True
    pretrained._hub_snapshot = lambda repo: str(snap)
    return "ok" if modelinfo.model_hash("smollm2-135m") == modelinfo.file_hash(snap / "model.safetensors") \
        else "silent_wrong"


@case(16, "a card.json whose arch names another module")
def _arch(ctx: Ctx):
    from experiments.models import zoo

    flag = ctx.work / "imported"
    (ctx.work / "audit_evil.py").write_text(
        f"open({str(flag)!r}, 'w').write('ran')\nclass M:\n    @classmethod\n"
        f"    def from_config(cls, c):\n        raise RuntimeError('not a model')\n")
    sys.path.insert(0, str(ctx.work))
    root = _zoo_copy(ctx, "linreg-lsa-1l")
    card_path = root / "linreg-lsa-1l" / "card.json"
    card = json.loads(card_path.read_text())
    card["arch"] = "module:audit_evil:M"
    card_path.write_text(json.dumps(card))
    try:
        zoo.load_zoo_model("linreg-lsa-1l", root=root)
    except Exception as err:  # noqa: BLE001
        if flag.exists():
            return "silent_wrong"  # the card made the loader run foreign code
        raise err
    return "silent_wrong"


# ------------------------------------------------------------------------------------- harness
def classify_exception(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, MemoryError) or "can't allocate memory" in text or "bad_alloc" in text:
        return "hang"  # exhausted memory
    return "clear_error" if is_project_error(err) else "traceback"


# ============================================================================ issue 24: one truth per cell
def two_run_store(ctx: Ctx, dynamics: bool = False) -> "tuple[Path, str, str]":
    """A store with two runs of one circuit cell by the running code: 128 prompts (unablated 0.75)
    computed first, a 32-prompt pilot (0.5) later; every reader must show the 128-prompt run.
    With ``dynamics``, also a training-dynamics row (its ``step`` column must not leak into the
    app's circuit pickers)."""
    import numpy as np
    import pandas as pd

    from experiments.runs.analyses import get_analysis
    from experiments.runs.config import Unit
    from experiments.runs.store import ResultsStore

    store = ResultsStore(ctx.work / "two-runs")
    prov = {**get_analysis("circuit").fingerprint(), "model_hash": "unknown"}
    keys = []
    for n, acc, at in ((128, 0.75, "2026-01-01"), (32, 0.5, "2026-02-01")):
        rows = []
        for name, a in (("unablated", acc), ("zero_shot", 0.1), ("yi_to_sq", acc), ("yi_to_sq:random", acc)):
            v = np.r_[np.ones(int(a * n)), np.zeros(n - int(a * n))]
            base = {"step": "ablation", "layer": -1, "head": -1, "metric": f"acc:{name}", "window": "0-1",
                    "n_prompts": n, "sd": float("nan")}
            rows += [{**base, "value": float(v.mean()), "prompt": -1}]
            rows += [{**base, "value": float(x), "prompt": i} for i, x in enumerate(v)]
        u = Unit("m", "classify", 4, 0, "circuit", json.dumps({"n_prompts": n}))
        store.write_unit(u, pd.DataFrame(rows), {**prov, "computed_at": at})
        keys.append(u.key)
    if dynamics:
        store.write_unit(Unit("induction-2l", "", 0, 0, "dynamics"),
                         pd.DataFrame({"metric": ["induction"], "value": [0.5], "step": [10], "layer": [1],
                                       "head": [0]}), {"computed_at": "2026-01-01"})
    return store.root, keys[0], keys[1]


@case(24, "results on a store with two runs of one cell show only the 128-prompt run", expect="ok")
def _current_results(ctx: Ctx):
    s, big, small = two_run_store(ctx)
    why, df = export_rows(s, "--analysis", "circuit")
    if why:
        return why
    return "ok" if set(df["unit_key"]) == {big} and set(df["n_prompts"]) == {128} else "silent_wrong"


@case(24, "--all-runs exports both runs with a current column", expect="ok")
def _all_runs(ctx: Ctx):
    s, big, small = two_run_store(ctx)
    why, df = export_rows(s, "--analysis", "circuit", "--all-runs")
    if why:
        return why
    cur = df.groupby("unit_key")["current"].all().to_dict()
    return "ok" if cur == {big: True, small: False} else "silent_wrong"


@case(24, "results --stats on two runs of one cell report n = 128", expect="ok")
def _current_stats(ctx: Ctx):
    s, _, _ = two_run_store(ctx)
    rc, out, err = cli("sweep", "results", "--store", str(s), "--stats", "--analysis", "circuit")
    return cli_outcome(rc, out, err, ok=lambda o, e: " 128 " in o and " 256 " not in o and " 32 " not in o)


@case(24, "power on two runs of one cell uses the 128-prompt run", expect="ok")
def _current_power(ctx: Ctx):
    s, _, _ = two_run_store(ctx)
    rc, out, err = cli("power", "--store", str(s))
    return cli_outcome(rc, out, err, ok=lambda o, e: "the pilot had 128-128" in o)


@case(24, "prune moves superseded units aside and deletes nothing", expect="ok")
def _prune(ctx: Ctx):
    s, big, small = two_run_store(ctx)
    before = {p.name: p.read_bytes() for p in s.rglob("*.parquet")}
    rc, out, err = cli("sweep", "prune", "--store", str(s))
    if rc != 0:
        return cli_outcome(rc, out, err)
    after = {p.name: p.read_bytes() for p in s.rglob("*.parquet")}
    if after != before:
        return "data_loss"
    return "ok" if (s / "superseded" / "units" / f"{small}.parquet").exists() else "silent_wrong"


@case(24, "the app's stored circuit rows hold only circuit units, current ones", expect="ok")
def _app_circuit_rows(ctx: Ctx):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
    from iclwb_app import circuit_view, results_view

    s, big, _ = two_run_store(ctx, dynamics=True)
    rows = circuit_view.circuit_rows(results_view.load_results(s))
    ok = set(rows["unit_key"]) == {big} and set(rows["analysis"]) == {"circuit"}
    return "ok" if ok else "silent_wrong"


def run_in_child(c: Case, ctx: Ctx, timeout: float) -> tuple[str, str]:
    """Fork, run the case, return (outcome, detail)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        os.setpgid(0, 0)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.chdir(ctx.work)
        try:
            outcome, detail = c.fn(ctx) or "ok", LAST_CLI[0]
        except BaseException as err:  # noqa: BLE001 - every failure is a result here
            outcome = classify_exception(err)
            detail = f"{type(err).__name__}: {' '.join(str(err).split())}"[:240]
            if outcome == "traceback":
                detail += " @ " + traceback.format_exc().strip().splitlines()[-3].strip()[:120]
        os.write(w, json.dumps([outcome, detail]).encode())
        os._exit(0)
    os.close(w)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(r)
        return "hang", f"still running after {timeout:.0f} s"
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    if not data:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if sig in (signal.SIGKILL, signal.SIGABRT):  # OOM killer, std::bad_alloc
            return "hang", f"died with signal {sig} (memory)"
        return "traceback", f"died (status {status})"
    outcome, detail = json.loads(data)
    return outcome, detail


def build_reference_store(work: Path) -> tuple[Path, Path]:
    cfg = work / "dur.toml"
    cfg.write_text(DUR)
    store = work / "dur-store"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            from experiments.runs.config import load_config
            from experiments.runs.executors import run_sweep

            rep = run_sweep(load_config(cfg), str(store), workers=1, progress=False)
            code = 0 if rep.ok and len(unit_files(store)) == 15 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise SystemExit("audit: the reference sweep (dur.toml, 15 units) failed")
    return store, cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=45.0,
                    help="seconds per case without a limit of its own (default 45: room for a loaded machine)")
    ap.add_argument("--only", default="", help="comma-separated item numbers")
    ap.add_argument("-v", "--verbose", action="store_true", help="print each failure's message")
    args = ap.parse_args()
    import torch  # noqa: F401

    import experiments
    import experiments.cli.main  # noqa: F401 - imported once here, shared by the forked cases

    repo = Path(experiments.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    print(f"audit of {repo} ({head or 'not a git checkout'})")
    only = {int(x) for x in args.only.split(",") if x.strip()}
    cases = [c for c in CASES if not only or c.item in only]
    counts = {o: 0 for o in OUTCOMES}
    as_expected = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="iclwb-audit-") as tmp:
        base = Path(tmp)
        store, cfg = build_reference_store(base)
        for i, c in enumerate(cases):
            work = base / f"case{i:02d}"
            work.mkdir()
            outcome, detail = run_in_child(c, Ctx(work, store, cfg), c.timeout or args.timeout)
            counts[outcome] += 1
            good = outcome == c.expect
            as_expected += good
            mark = "  " if good else "!!"
            print(f"{mark} item {c.item:2d}  {outcome:12s} (want {c.expect:11s})  {c.name}")
            if args.verbose and detail:
                print(f"      {detail}")
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"wall {time.perf_counter() - t0:.0f} s, CPU {time.process_time() - c0 + child.ru_utime + child.ru_stime:.0f} s")
    print(f"cases: {len(cases)}")
    for o in OUTCOMES:
        print(f"{o}: {counts[o]}")
    print(f"as_expected: {as_expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
