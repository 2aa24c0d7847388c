"""The standard task suite (fv:NAME), task files (file:PATH) and the one task_batch path."""

from __future__ import annotations

import json

import pytest
import torch

from experiments import tasks
from experiments.tasks import TaskError, suite, taskfile
from experiments.tasks import language as L


@pytest.fixture(scope="module")
def tok():
    from experiments.models.pretrained import load_tokenizer

    return load_tokenizer("smollm2-135m")


def test_suite_ships_39_tasks_with_the_mit_notice():
    assert len(suite.names("abstractive")) == 27 and len(suite.names("extractive")) == 12
    assert len([t for t in tasks.catalog() if t.startswith("fv:")]) == 39 >= 35
    lic = (suite.DATA_DIR / "LICENSE").read_text()
    assert "MIT License" in lic and "Eric Todd" in lic
    assert "Function Vectors" in (suite.DATA_DIR / "README.md").read_text()
    ds = suite.get_dataset("fv:antonym")
    raw = json.loads((suite.DATA_DIR / "abstractive" / "antonym.json").read_text())
    assert ds.items == tuple((d["input"], d["output"]) for d in raw)  # shipped unchanged
    sent = suite.get_dataset("fv:sentiment")
    assert sent.is_classification and sent.classes == ("negative", "positive")
    assert sent.label_sets["flipped"] == ("positive", "negative")


@pytest.mark.parametrize("task", suite.task_names())
def test_every_suite_task_has_the_language_role_tags(tok, task):
    """All 39 tasks build prompts that every analysis reads the same way (they all take their
    prompts from task_batch: test_every_router_uses_task_batch)."""
    b = tasks.task_batch(task, 3, 5, seed=2, tokenizer=tok)
    assert b.batch_size == 5 and b.n_demos == 3 and b.meta["task_name"] == task
    for r in range(5):
        # x_i then its forerunner; the label follows the forerunner; the read-out ends the prompt
        assert (b.forerunner[r] >= b.demo_text[r, :, 1] - 1).all()
        assert torch.equal(b.label[r], b.forerunner[r] + 1)
        assert int(b.readout[r]) == int(b.lengths[r]) - 1
        assert b.tokens[r, b.readout[r]] == b.tokens[r, b.forerunner[r, 0]]  # the same ':' token
    assert (b.target >= 0).all()
    if suite.get_dataset(task).is_classification:  # e.g. fv:sentiment, fv:person-sport
        assert b.candidates is not None and (b.candidates == b.candidates[0]).all()
        assert set(b.target.tolist()) <= set(b.candidates[0].tolist())
    else:
        assert b.candidates is None
        assert set(b.target.tolist()) <= set(b.meta["answer_tokens"])


def test_item_report_counts_per_task(tok):
    df = suite.item_report(tok, ["fv:antonym", "fv:present-past"], tokenizer_name="smollm2-135m")
    assert list(df.task) == ["fv:antonym", "fv:present-past"]
    for r in df.to_dict("records"):
        assert r["kept_first"] + r["ambiguous_first"] == r["n_items"]
        assert r["single_token"] + r["multi_token"] == r["n_items"]
        b = tasks.task_batch(r["task"], 1, 2, 0, tokenizer=tok)
        assert b.meta["n_items"] == r["kept_first"]


def test_every_router_uses_task_batch(tok):
    """The sweep, the app and the vectors study give the same prompts as tasks.task_batch."""
    from experiments.runs import inputs
    from experiments.studies import vectors_study
    from iclwb_app import prompting

    ref = tasks.task_batch("fv:country-capital", 2, 4, 3, tokenizer=tok)

    class M:
        tokenizer = tok
        cfg = type("cfg", (), {"d_vocab": 49152})()
    for b in (prompting.task_batch(M(), "fv:country-capital", 2, 4, 3),
              vectors_study.make_task_prompts(M(), "fv:country-capital", 2, 4, 3),
              inputs.make_task_batch("smollm2-135m", "fv:country-capital", 2, 3, 4)):
        assert torch.equal(b.tokens, ref.tokens) and torch.equal(b.target, ref.target)
    lang = tasks.task_batch("language:antonyms", 2, 3, 1, tokenizer=tok)
    assert torch.equal(lang.tokens, L.make_prompts(tok, "antonyms", 2, 3, 1).tokens)
    assert "fv:antonym" in prompting.language_task_names()


def test_task_names_are_checked():
    assert tasks.task_problem("fv:antonym") is None
    assert "fv:NAME" in tasks.task_problem("fv:nope")
    assert "no such file" in tasks.task_problem("file:/nonexistent/x.jsonl")
    with pytest.raises(TaskError, match="tokenizer"):
        tasks.task_batch("fv:antonym", 1, 1, 0)


# ---------------------------------------------------------------------- task files
def test_task_files_round_trip(tmp_path, tok):
    for ds in (suite.get_dataset("fv:antonym"), suite.get_dataset("fv:person-sport"),
               L.get_dataset("sentiment")):
        for fmt in ("jsonl", "csv"):
            path = taskfile.save(ds, tmp_path / f"{ds.name.replace(':', '_')}.{fmt}")
            back = taskfile.load(path)
            assert back.items == ds.items and back.classes == ds.classes
            assert back.template == ds.template and back.name == ds.name
            if ds.is_classification:
                assert back.label_sets["natural"] == ds.label_sets["natural"]
    path = taskfile.save(L.get_dataset("capitals"), tmp_path / "caps.csv")
    a = tasks.task_batch(f"file:{path}", 3, 4, 0, tokenizer=tok)
    b = tasks.task_batch("language:capitals", 3, 4, 0, tokenizer=tok)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.target, b.target)


def test_task_file_with_classes_template_and_labels(tmp_path, tok):
    p = tmp_path / "reviews.jsonl"
    p.write_text('{"template": "Review: {x}\\nSentiment: {y}\\n"}\n'
                 '{"classes": ["pos", "neg"], "labels": ["positive", "negative"]}\n'
                 + "".join(json.dumps({"input": w, "class": c}) + "\n"
                           for w, c in [("great", "pos"), ("awful", "neg"), ("lovely", "pos"),
                                        ("bad", "neg"), ("fine", "pos")]))
    b = tasks.task_batch(f"file:{p}", 2, 6, 0, tokenizer=tok, label_set="flipped")
    assert [tok.decode([c]) for c in b.candidates[0]] == [" negative", " positive"]
    text = tok.decode(b.tokens[0, : b.lengths[0]])
    assert "Review:" in text and text.endswith("Sentiment:")


@pytest.mark.parametrize("name,text,match", [
    ("a.jsonl", '{"input": "x", "output": "y"}\n{"input": "z", "output": \n', r"a\.jsonl, line 2: not valid JSON"),
    ("b.jsonl", '{"input": "x", "output": "y"}\n["x", "y"]\n', r"line 2: expected a JSON object"),
    ("c.jsonl", '{"input": "x", "output": "y"}\n{"input": "z"}\n', r"line 2: output must be a non-empty string"),
    ("d.jsonl", '{"input": "x", "output": "y"}\n{"input": "z", "outptu": "w"}\n', r"line 2: unknown keys \['outptu'\]"),
    ("e.jsonl", '{"templat": "{x} {y}"}\n{"input": "x", "output": "y"}\n', r"line 1: an item needs an \"input\" key"),
    ("f.jsonl", '{"template": "{y} {x}"}\n{"input": "x", "output": "y"}\n{"input": "z", "output": "w"}\n',
     r"line 1: template"),
    ("g.csv", "input,output\ncat,dog\nbird,fish,extra\n", r"g\.csv, line 3: 3 fields but the header has 2"),
    ("h.csv", "question,answer\ncat,dog\n", r"line 1: the header must name the columns input and output"),
    ("i.csv", "# template = {x}: {y}\ninput,output\ncat,dog\nbird,fish\n", r"line 1: the value of template is not valid JSON"),
    ("j.csv", "input,output\ncat,dog\n", r"needs at least 2 items"),
    ("k.txt", "cat,dog\n", r"unknown format '\.txt'"),
    ("l.jsonl", '{"classes": ["a", "b"]}\n{"input": "x", "class": "a"}\n{"input": "y", "class": "c"}\n',
     r"line 3: class 'c' is not among the declared classes"),
])
def test_malformed_task_files_name_the_line_and_problem(tmp_path, name, text, match):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(taskfile.TaskFileError, match=match):
        taskfile.load(p)
    assert tasks.task_problem(f"file:{p}") is not None  # sweep configs and the app refuse it early


def test_app_takes_a_task_file(tmp_path, tok):
    from iclwb_app import model_info, prompting, results_view

    good = taskfile.save(L.get_dataset("antonyms"), tmp_path / "ant.jsonl")
    name = results_view.task_file(str(good))
    assert name == f"file:{good}"

    class M:
        tokenizer = tok
        cfg = type("cfg", (), {"d_vocab": 49152})()
    b = prompting.task_batch(M(), name, 2, 3, 0)
    assert torch.equal(b.tokens, tasks.task_batch("language:antonyms", 2, 3, 0, tokenizer=tok).tokens)
    bad = tmp_path / "bad.csv"
    bad.write_text("input,output\ncat,dog,x\n")
    with pytest.raises(model_info.AppInputError, match="line 2: 3 fields"):
        results_view.task_file(str(bad))
