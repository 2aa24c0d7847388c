"""Sweep configs: a TOML file that names a grid of models x tasks x k x seeds x analyses.

A config is one or more *grids*; every grid expands to the cartesian product of its lists, and the
sweep is the union of the grids' units (duplicates removed). Top-level lists are the defaults of
every grid (top-level ``[params.A]`` apply to the grids that run analysis A); a config without
``[[grid]]`` tables is a single grid made of the top-level lists (this example validates, tested)::

    name = "circuit-vs-k"              # names the sweep (default: the file's stem)
    store = "results/circuit-vs-k"     # optional default results folder
    seeds = [0, 1, 2]                  # default for every grid (default [0])
    # imports = ["mypkg.my_analyses"]  # optional: modules that register extra analyses

    [params.circuit]                   # default parameters of an analysis, for every grid
    n_prompts = 64

    [[grid]]
    models = ["icl-classify", "smollm2-135m"]
    tasks = ["classify"]
    k = [2, 4, 8]
    analyses = ["circuit"]

    [[grid]]
    models = ["induction-2l"]
    analyses = ["head_scan"]           # head_scan needs no task or k
    [grid.params.head_scan]            # per-grid parameter overrides
    seg_len = 20

A *unit* is one (model, task, k, seed, analysis, params): the smallest piece of work, stored as one
Parquet file keyed by ``Unit.key`` (a hash of exactly those six fields). Analyses that ignore the
task or k get ``task=""`` / ``k=0`` so that, e.g., a head scan is not repeated for every k.

Every mistake is reported before any work starts, as one ``SweepConfigError`` that names the field
(``grid[1].k[2]``), what was wrong and the allowed values.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from experiments.runs import modelinfo
from experiments.runs.analyses import analysis_names, get_analysis
from experiments.runs.inputs import task_problem
from probes.errors import WorkbenchError

TOP_KEYS = ("name", "description", "store", "seeds", "models", "tasks", "k", "analyses", "params",
            "grid", "imports")
GRID_KEYS = ("models", "tasks", "k", "seeds", "analyses", "params")


class SweepConfigError(WorkbenchError):
    """A sweep config that cannot run; the message names the field and the allowed values."""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Unit:
    """One model x task x k x seed x analysis (with its parameters): one stored result."""

    model: str
    task: str
    k: int
    seed: int
    analysis: str
    params_json: str = "{}"

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json)

    @property
    def key(self) -> str:
        """Stable hash of the unit's identity: its result file is ``units/<key>.parquet``."""
        return short_hash(self.as_dict(), 20)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "task": self.task, "k": self.k, "seed": self.seed,
                "analysis": self.analysis, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Unit":
        return cls(model=d["model"], task=d["task"], k=int(d["k"]), seed=int(d["seed"]),
                   analysis=d["analysis"], params_json=canonical_json(d.get("params", {})))

    def label(self) -> str:
        parts = [self.analysis, self.model]
        if self.task:
            parts.append(self.task)
        if self.k:
            parts.append(f"k={self.k}")
        parts.append(f"seed={self.seed}")
        return " ".join(parts)


@dataclass
class Grid:
    models: list[str]
    tasks: list[str]
    k: list[int]
    seeds: list[int]
    analyses: list[str]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SweepConfig:
    name: str
    grids: list[Grid]
    description: str = ""
    store: str | None = None
    imports: list[str] = field(default_factory=list)
    source: str = ""
    """The config text as written (stored beside the results)."""

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "imports": self.imports, "grids": [g.__dict__ for g in self.grids]}

    @property
    def config_hash(self) -> str:
        """Hash of the normalised config (independent of comments and formatting)."""
        return short_hash(self.as_dict(), 16)

    def units(self) -> list[Unit]:

        seen: dict[str, Unit] = {}
        for g in self.grids:
            for model, analysis in itertools.product(g.models, g.analyses):
                spec = get_analysis(analysis)
                tasks = g.tasks if spec.uses_task else [""]
                ks = g.k if spec.uses_k else [0]
                params = spec.resolve_params(g.params.get(analysis, {}))
                for task, k, seed in itertools.product(tasks or [""], ks or [0], g.seeds):
                    u = Unit(model, task, int(k), int(seed), analysis, canonical_json(params))
                    seen.setdefault(u.key, u)
        return list(seen.values())


# ---------------------------------------------------------------------------------------- parsing
def load_config(path: str | Path, validate: bool = True) -> SweepConfig:
    """Read and validate a TOML sweep config (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise SweepConfigError(f"sweep config {str(path)!r} does not exist")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepConfigError(f"{path}: not valid TOML: {err}") from None
    return parse_config(raw, name_default=path.stem, source=text, validate=validate)


def loads_config(text: str, name: str = "sweep", validate: bool = True) -> SweepConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise SweepConfigError(f"not valid TOML: {err}") from None
    return parse_config(raw, name_default=name, source=text, validate=validate)


def _type_name(v: Any) -> str:
    return {str: "string", int: "integer", float: "float", bool: "boolean", list: "list",
            dict: "table"}.get(type(v), type(v).__name__)


def _list_of(raw: dict, key: str, where: str, kind: type, default: Any = None) -> list:
    if key not in raw:
        if default is None:
            raise SweepConfigError(f"{where}: missing field {key!r} (a list of {kind.__name__})")
        return list(default)
    val = raw[key]
    if isinstance(val, kind) and not isinstance(val, bool):
        val = [val]
    if not isinstance(val, list):
        raise SweepConfigError(
            f"{where}.{key}: expected a list of {_type_name(kind())}s, got {_type_name(val)} {val!r}")
    for i, item in enumerate(val):
        if not isinstance(item, kind) or isinstance(item, bool):
            raise SweepConfigError(
                f"{where}.{key}[{i}]: expected {_type_name(kind())}, got {_type_name(item)} {item!r}")
    return list(val)


def parse_config(raw: dict[str, Any], name_default: str = "sweep", source: str = "",
                 validate: bool = True) -> SweepConfig:
    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise SweepConfigError(
            f"unknown field {unknown[0]!r} at the top level; allowed fields: {', '.join(TOP_KEYS)}")
    name = raw.get("name", name_default)
    for fld in ("name", "description", "store"):
        if fld in raw and not isinstance(raw[fld], str):
            raise SweepConfigError(f"{fld}: expected a string, got {_type_name(raw[fld])} {raw[fld]!r}")
    imports = _list_of(raw, "imports", "config", str, default=[])
    _import_plugins(imports)
    top_params = _params(raw.get("params", {}), "params")
    seeds = _list_of(raw, "seeds", "config", int, default=[0])

    grid_raws = raw.get("grid")
    if grid_raws is None:
        grid_raws, where_fmt = [{k: raw[k] for k in GRID_KEYS if k in raw and k != "params"}], "config"
    else:
        if not isinstance(grid_raws, list) or not all(isinstance(g, dict) for g in grid_raws):
            raise SweepConfigError("grid: expected [[grid]] tables")
        where_fmt = "grid[{i}]"
        stray = [k for k in ("models", "tasks", "k", "analyses") if k in raw]
        if stray:
            raise SweepConfigError(
                f"{stray[0]}: give it inside each [[grid]] table (top-level lists are only used "
                f"when the config has no [[grid]] tables; top-level 'seeds' and 'params' are defaults)")
    grids = []
    for a in top_params:
        if not any(a in (g.get("analyses") or []) for g in grid_raws if isinstance(g.get("analyses"), list)):

            if a in analysis_names():
                raise SweepConfigError(f"params.{a}: parameters for analysis {a!r}, which no grid runs")
    for i, g in enumerate(grid_raws):
        where = where_fmt.format(i=i)
        unknown = [k for k in g if k not in GRID_KEYS]
        if unknown:
            raise SweepConfigError(
                f"{where}: unknown field {unknown[0]!r}; allowed fields: {', '.join(GRID_KEYS)}")
        analyses = _list_of(g, "analyses", where, str)
        # top-level [params.A] are defaults for the grids that run A; a grid's own must be run by it
        params = {a: dict(p) for a, p in top_params.items() if a in analyses}
        for a, p in _params(g.get("params", {}), f"{where}.params").items():
            params.setdefault(a, {}).update(p)
        grids.append(Grid(
            models=_list_of(g, "models", where, str),
            tasks=_list_of(g, "tasks", where, str, default=[]),
            k=_list_of(g, "k", where, int, default=[]),
            seeds=_list_of(g, "seeds", where, int, default=seeds),
            analyses=analyses,
            params=params,
        ))
    cfg = SweepConfig(name=name, grids=grids, description=raw.get("description", ""),
                      store=raw.get("store"), imports=imports, source=source)
    if validate:
        validate_config(cfg)
    return cfg


def _params(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise SweepConfigError(f"{where}: expected tables [{where}.ANALYSIS] of parameters")
    return {a: dict(p) for a, p in raw.items()}


def _import_plugins(modules: Iterable[str]) -> None:

    for m in modules:
        try:
            importlib.import_module(m)
        except ImportError as err:
            raise SweepConfigError(f"imports: cannot import {m!r}: {err}") from None


# ------------------------------------------------------------------------------------- validation
def validate_config(cfg: SweepConfig) -> None:
    """Every check that can be made without running anything; raises SweepConfigError."""

    for i, g in enumerate(cfg.grids):
        where = f"grid[{i}]" if len(cfg.grids) > 1 or cfg.source.find("[[grid]]") >= 0 else "config"
        for fld in ("models", "analyses", "seeds"):
            if not getattr(g, fld):
                raise SweepConfigError(f"{where}.{fld}: must not be empty")
        for j, a in enumerate(g.analyses):
            if a not in analysis_names():
                raise SweepConfigError(
                    f"{where}.analyses[{j}]: unknown analysis {a!r}; allowed: {', '.join(analysis_names())}")
        for a in g.params:
            if a not in analysis_names():
                raise SweepConfigError(
                    f"{where}.params.{a}: unknown analysis {a!r}; allowed: {', '.join(analysis_names())}")
            if a not in g.analyses:
                raise SweepConfigError(
                    f"{where}.params.{a}: parameters for analysis {a!r}, which this grid does not run "
                    f"(its analyses: {', '.join(g.analyses)})")
        for j, m in enumerate(g.models):
            try:
                modelinfo.check_model_name(m)
            except ValueError as err:
                raise SweepConfigError(f"{where}.models[{j}]: {err}") from None
        for j, s in enumerate(g.seeds):
            if s < 0:
                raise SweepConfigError(f"{where}.seeds[{j}]: seeds must be >= 0, got {s}")
        for j, k in enumerate(g.k):
            if k < 0:
                raise SweepConfigError(f"{where}.k[{j}]: k (demonstrations) must be >= 0, got {k}")
        for a in g.analyses:
            spec = get_analysis(a)
            try:
                spec.resolve_params(g.params.get(a, {}))
            except ValueError as err:
                raise SweepConfigError(f"{where}.params.{a}: {err}") from None
            if spec.uses_task and not g.tasks:
                raise SweepConfigError(
                    f"{where}.tasks: analysis {a!r} needs at least one task; allowed: "
                    f"{', '.join(modelinfo.task_names()) or '(no task registry found)'}")
            if spec.uses_k and not g.k:
                raise SweepConfigError(f"{where}.k: analysis {a!r} needs a list of k (demonstrations per prompt)")
            if spec.uses_task:

                for j, t in enumerate(g.tasks):
                    why = task_problem(t)
                    if why:
                        raise SweepConfigError(f"{where}.tasks[{j}]: {why}")
        # k against each model's context, for the analyses that use k
        k_tasks = sorted({t for a in g.analyses if get_analysis(a).uses_k
                          for t in (g.tasks if get_analysis(a).uses_task else [""])})
        for m in g.models:
            for t in k_tasks:
                for j, k in enumerate(g.k):
                    why = modelinfo.k_problem(m, t, k)
                    if why:
                        raise SweepConfigError(f"{where}.k[{j}]: {why}")
        for a in g.analyses:
            spec = get_analysis(a)
            for m in g.models:
                for t in (g.tasks if spec.uses_task else [""]):
                    reason = spec.check(m, t)
                    if reason:
                        raise SweepConfigError(f"{where}: analysis {a!r} cannot run on model {m!r}"
                                               f"{f' with task {t!r}' if t else ''}: {reason}")
                    if spec.check_params is None:
                        continue
                    params = spec.resolve_params(g.params.get(a, {}))
                    for k in (g.k if spec.uses_k else [0]):
                        why = spec.check_params(m, t, k, params)
                        if why:
                            raise SweepConfigError(
                                f"{where}.params.{a} (model {m!r}{f', task {t!r}' if t else ''}"
                                f"{f', k={k}' if spec.uses_k else ''}): {why}")
