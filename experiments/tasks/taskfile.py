"""Your own ICL task as a file: ``file:PATH`` in sweep configs, the app and the Python API.

Two formats, chosen by the suffix (``.jsonl`` or ``.csv``):

JSONL: one JSON object per line. Items are ``{"input": ..., "output": ...}`` (an open-vocabulary
task: the output is the answer) or ``{"input": ..., "class": ...}`` (a classification task; the
class is a name). Optional settings are objects without ``"input"``, anywhere in the file::

    {"template": "Review: {x}\\nSentiment: {y}\\n"}
    {"classes": ["pos", "neg"], "labels": ["positive", "negative"]}
    {"input": "a great film", "class": "pos"}
    {"input": "a dull film", "class": "neg"}

CSV: a header row naming the columns ``input`` and ``output`` and/or ``class``; settings go on
comment lines before it, ``# KEY = JSON value``::

    # template = "Review: {x}\\nSentiment: {y}\\n"
    # labels = ["positive", "negative"]
    input,class
    a great film,pos

Settings: ``template`` (``{x}`` then ``{y}``; default ``"{x}: {y}\\n"``), ``classes`` (the class
names in order; default: sorted as found), ``labels`` (the natural label word of each class;
default: the class names), ``name``, ``description``. A file with a class column is a
classification task (candidates, label sets ``natural``/``flipped``/``arbitrary`` as for the
built-in sentiment task); otherwise the outputs are the answers, scored by the first-token rule of
``experiments.tasks.language``. Blank lines are skipped. A malformed file raises one
``TaskFileError`` naming the file, the line and the problem. ``save(dataset, path)`` writes a
``Dataset`` in either format; ``load(save(ds, p))`` gives ``ds`` back (tested).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from experiments.tasks.base import TaskError
from experiments.tasks.text import OPEN_TEMPLATE, Dataset, Template

SETTINGS = ("template", "classes", "labels", "name", "description")
FORMATS = (".jsonl", ".csv")


class TaskFileError(TaskError):
    """A task file that cannot be read; the message names the file, the line and the problem."""


def _fail(path: Path, line: int | None, problem: str) -> TaskFileError:
    where = f"{path}, line {line}" if line is not None else str(path)
    return TaskFileError(f"task file {where}: {problem}")


_CACHE: dict[str, tuple[float, int, Any]] = {}


def load(path: str | os.PathLike) -> Any:
    """The ``language.Dataset`` of a JSONL or CSV task file (cached while the file is unchanged)."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in FORMATS:
        raise _fail(p, None, f"unknown format {p.suffix or '(no suffix)'!r}; use .jsonl or .csv")
    if not p.is_file():
        raise _fail(p, None, "no such file (give file:PATH with the path of a .jsonl or .csv file)")
    st = p.stat()
    key = str(p.resolve())
    hit = _CACHE.get(key)
    if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
        return hit[2]
    text = p.read_text(encoding="utf-8")
    rows, settings = (_read_jsonl if p.suffix.lower() == ".jsonl" else _read_csv)(p, text)
    ds = _dataset(p, rows, settings)
    _CACHE[key] = (st.st_mtime, st.st_size, ds)
    return ds


def _read_jsonl(p: Path, text: str) -> tuple[list[tuple[int, dict]], dict[str, Any]]:
    rows, settings = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise _fail(p, n, f"not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise _fail(p, n, f"expected a JSON object like {{\"input\": ..., \"output\": ...}}, "
                              f"got {type(obj).__name__}")
        if "input" in obj:
            rows.append((n, obj))
        else:
            unknown = sorted(set(obj) - set(SETTINGS))
            if unknown:
                raise _fail(p, n, f"an item needs an \"input\" key; a settings line may only have "
                                  f"{', '.join(SETTINGS)} (got {', '.join(unknown)})")
            settings.update({k: (k, n, v) for k, v in obj.items()})
    return rows, settings


def _read_csv(p: Path, text: str) -> tuple[list[tuple[int, dict]], dict[str, Any]]:
    lines = text.splitlines(keepends=True)
    settings: dict[str, Any] = {}
    start = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            start = n
            continue
        if not line.lstrip().startswith("#"):
            break
        start = n
        body = line.lstrip()[1:].strip()
        if not body:
            continue
        key, eq, val = body.partition("=")
        key = key.strip()
        if not eq or key not in SETTINGS:
            raise _fail(p, n, f"a comment line before the header must be '# KEY = JSON value' with "
                              f"KEY one of {', '.join(SETTINGS)}, got {body!r}")
        try:
            settings[key] = (key, n, json.loads(val))
        except json.JSONDecodeError as err:
            raise _fail(p, n, f"the value of {key} is not valid JSON ({err.msg}); write strings in "
                              f"double quotes, e.g. # template = \"{{x}}: {{y}}\\n\"") from None
    reader = csv.reader(io.StringIO("".join(lines[start:])))
    try:
        header = next(reader)
    except StopIteration:
        raise _fail(p, None, "no header row (the columns input, output and/or class)") from None
    header = [h.strip() for h in header]
    hline = start + 1
    bad = [h for h in header if h not in ("input", "output", "class")]
    if bad or "input" not in header or not ({"output", "class"} & set(header)):
        raise _fail(p, hline, f"the header must name the columns input and output (or class), "
                              f"got {header}")
    rows = []
    for row in reader:
        n = hline + reader.line_num - 1
        if not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise _fail(p, n, f"{len(row)} fields but the header has {len(header)} ({', '.join(header)}); "
                              f"quote fields that contain commas")
        rows.append((n, dict(zip(header, row))))
    return rows, settings


def _setting(p: Path, settings: dict, key: str, kind: type, default: Any) -> Any:
    if key not in settings:
        return default
    _, n, val = settings[key]
    if kind is list:
        if not (isinstance(val, list) and val and all(isinstance(v, str) and v for v in val)):
            raise _fail(p, n, f"{key} must be a non-empty list of non-empty strings, got {val!r}")
        return tuple(val)
    if not isinstance(val, str):
        raise _fail(p, n, f"{key} must be a string, got {val!r}")
    return val


def _dataset(p: Path, rows: list[tuple[int, dict]], settings: dict) -> Any:

    template = _setting(p, settings, "template", str, OPEN_TEMPLATE)
    try:
        Template.parse(template)
    except TaskError as err:
        raise _fail(p, settings["template"][1], str(err)) from None
    name = _setting(p, settings, "name", str, f"file:{p}")
    desc = _setting(p, settings, "description", str, f"task file {p.name}")
    if len(rows) < 2:
        raise _fail(p, None, f"needs at least 2 items (a demonstration and a query), found {len(rows)}")
    has_class = any("class" in r for _, r in rows)
    items: list[tuple[str, Any]] = []
    for n, r in rows:
        extra = sorted(set(r) - {"input", "output", "class"})
        if extra:
            raise _fail(p, n, f"unknown keys {extra}; an item has input and output (or class)")
        x = r.get("input")
        if not isinstance(x, str) or not x.strip():
            raise _fail(p, n, f"input must be a non-empty string, got {x!r}")
        if has_class:
            c = r.get("class")
            if not isinstance(c, str) or not c.strip():
                raise _fail(p, n, f"class must be a non-empty string (every item needs one when any "
                                  f"item has a class), got {c!r}")
            items.append((x, c))
        else:
            y = r.get("output")
            if not isinstance(y, str) or not y.strip():
                raise _fail(p, n, f"output must be a non-empty string, got {y!r}")
            items.append((x, y))
    if not has_class:
        for key in ("classes", "labels"):
            if key in settings:
                raise _fail(p, settings[key][1], f"{key} applies to classification files only "
                                                 f"(items with a class instead of an output)")
        return Dataset(name, desc, tuple(items), template=template)
    found = sorted({c for _, c in items})
    classes = _setting(p, settings, "classes", list, tuple(found))
    missing = sorted(set(found) - set(classes))
    if missing:
        line = next(n for (n, r) in rows if r.get("class") in missing)
        raise _fail(p, line, f"class {missing[0]!r} is not among the declared classes {list(classes)}")
    if len(set(classes)) != len(classes) or len(classes) < 2:
        raise _fail(p, settings.get("classes", (None, None))[1],
                    f"a classification task needs at least 2 distinct classes, got {list(classes)}")
    labels = _setting(p, settings, "labels", list, classes)
    if len(labels) != len(classes):
        raise _fail(p, settings["labels"][1], f"labels has {len(labels)} words but there are "
                                              f"{len(classes)} classes {list(classes)}")
    index = {c: i for i, c in enumerate(classes)}
    label_sets = {"natural": tuple(labels), "flipped": tuple(labels[1:] + labels[:1]),
                  "arbitrary": ("foo", "bar", "baz", "qux", "zap", "mux", "fig", "jog")[: len(classes)]}
    return Dataset(name, desc, tuple((x, index[c]) for x, c in items), tuple(classes), label_sets,
                   template=template)


def save(dataset: Any, path: str | os.PathLike) -> Path:
    """Write a ``language.Dataset`` as a JSONL or CSV task file (by suffix); returns the path."""
    p = Path(path).expanduser()
    if p.suffix.lower() not in FORMATS:
        raise _fail(p, None, f"unknown format {p.suffix or '(no suffix)'!r}; use .jsonl or .csv")
    settings: dict[str, Any] = {"template": dataset.template, "name": dataset.name,
                                "description": dataset.description}
    if dataset.is_classification:
        settings["classes"] = list(dataset.classes)
        settings["labels"] = list(dataset.label_sets.get("natural", dataset.classes))
        rows = [{"input": x, "class": dataset.classes[c]} for x, c in dataset.items]
    else:
        rows = [{"input": x, "output": str(y)} for x, y in dataset.items]
    if p.suffix.lower() == ".jsonl":
        lines = [json.dumps(settings, ensure_ascii=False)] + [json.dumps(r, ensure_ascii=False) for r in rows]
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        buf = io.StringIO()
        for key, val in settings.items():
            buf.write(f"# {key} = {json.dumps(val, ensure_ascii=False)}\n")
        w = csv.writer(buf, lineterminator="\n")
        cols = ["input", "class" if dataset.is_classification else "output"]
        w.writerow(cols)
        for r in rows:
            w.writerow([r[c] for c in cols])
        p.write_text(buf.getvalue(), encoding="utf-8")
    _CACHE.pop(str(p.resolve()), None)
    return p


__all__ = ["TaskFileError", "load", "save"]
