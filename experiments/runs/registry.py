"""Analysis specs and the registry of analyses: ``AnalysisSpec``, its ``code_hash``, ``register``.

An analysis is a function ``fn(model_name, task, k, seed, params) -> AnalysisResult``: a tidy
pandas table (one measurement per row, with at least the columns ``metric`` and ``value``; any
other columns are dimensions such as ``layer``, ``head``, ``step``, ``condition``) plus optional
tensor artefacts (attention maps, head-score tables) stored in safetensors beside the table.
The store adds the provenance columns; an analysis only measures.

Versions: a stored unit is current only while its analysis is the one that computed it. Every
unit records ``AnalysisSpec.fingerprint()`` (``analysis_version``: the spec's ``version``, and
``code_hash``: a hash of the analysis function's code and of the modules named in ``requires`` and
``code``); a unit whose version or code hash differs from the running code's is *stale*: ``iclwb
sweep status`` lists it and ``iclwb sweep run`` recomputes it. Bump ``version`` whenever what an
analysis measures changes (new or renamed metrics, new columns, a fixed bug) and the change is not
inside the hashed code, e.g. in a helper module it calls.

The built-in analyses register themselves in ``experiments.runs.analyses``; look analyses up
with ``experiments.runs.analyses.get_analysis``, which sees them all.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pandas as pd


@dataclass
class AnalysisResult:
    table: pd.DataFrame
    tensors: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisSpec:
    """One registered analysis.

    ``version`` is part of what makes a stored unit current (see the module docstring): bump it
    (``version=2``, ...) in the same commit that changes what the analysis stores, e.g. when adding
    statistics columns; every stored unit of the analysis is then stale and the next ``iclwb sweep
    run`` recomputes it. Changes to the function itself or to the modules in ``requires`` and
    ``code`` are caught without a bump (``code_hash``; comments, docstrings and formatting do not
    count); changes anywhere else need the bump.
    """

    name: str
    fn: Callable[[str, str, int, int, dict[str, Any]], AnalysisResult | pd.DataFrame]
    params: dict[str, Any]
    """Allowed parameters and their defaults; a config value must have the default's type."""
    uses_task: bool = True
    uses_k: bool = True
    description: str = ""
    requires: tuple[str, ...] = ()
    """Modules this analysis needs; when one is missing the analysis is reported unavailable."""
    applies: Callable[[str, str], str | None] | None = None
    """(model, task) -> None when the analysis can run on them, else the reason why not."""
    check_params: Callable[[str, str, int, dict[str, Any]], str | None] | None = None
    """(model, task, k, resolved params) -> None when the values fit, else what is wrong; checked
    with the config, before any work (never loads a model)."""
    version: int | str = 1
    """Bump when what the analysis stores changes outside the hashed code (see the class docstring)."""
    code: tuple[str, ...] = ()
    """Further modules whose source is part of ``code_hash`` (beside ``fn`` and ``requires``)."""

    def fingerprint(self) -> dict[str, str]:
        """``{"analysis_version", "code_hash"}``: what a stored unit must match to be current."""
        return {"analysis_version": str(self.version),
                "code_hash": code_hash(self.fn, tuple(self.requires) + tuple(self.code))}

    def resolve_params(self, given: dict[str, Any]) -> dict[str, Any]:
        out = dict(self.params)
        for key, val in given.items():
            if key not in self.params:
                allowed = ", ".join(sorted(self.params)) or "(none)"
                raise ValueError(f"unknown parameter {key!r} of analysis {self.name!r}; allowed: {allowed}")
            default = self.params[key]
            if default is not None and not _same_type(val, default):
                kind = type(default).__name__
                if isinstance(default, list) and default:
                    kind = f"a list of {type(default[0]).__name__}"
                raise ValueError(f"parameter {key!r} must be {kind} "
                                 f"(like its default {default!r}), got {type(val).__name__} {val!r}")
            if key == "precision" and val not in PRECISIONS:
                raise ValueError(f"parameter 'precision' must be one of {', '.join(PRECISIONS)}, got {val!r}")
            out[key] = val
        return out

    def unavailable(self) -> str | None:
        """None when every required module imports, else what is missing."""
        for mod in self.requires:
            try:
                importlib.import_module(mod)
            except ImportError as err:
                return f"needs {mod} ({err})"
        return None

    def check(self, model: str, task: str) -> str | None:
        why = self.unavailable()
        if why:
            return why
        return self.applies(model, task) if self.applies else None

    def run(self, model: str, task: str, k: int, seed: int, params: dict[str, Any]) -> AnalysisResult:
        out = self.fn(model, task, k, seed, self.resolve_params(params))
        if isinstance(out, pd.DataFrame):
            out = AnalysisResult(out)
        missing = {"metric", "value"} - set(out.table.columns)
        if missing:
            raise ValueError(f"analysis {self.name!r} returned a table without columns {sorted(missing)}")
        return out


def _normalized_source(src: str) -> str:
    """The code of ``src`` without comments, docstrings, formatting and import statements (its
    AST), else the text. Imports are left out so that moving code between modules, which rewrites
    import lines only, does not make every stored unit stale; what the imported code does is
    covered by the modules an analysis names in ``requires``/``code``."""
    try:
        tree = ast.parse(textwrap.dedent(src))
    except SyntaxError:  # e.g. a lambda's source line cut out of a larger expression
        return src
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        if (isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            body = body[1:]
        cast(Any, node).body = [b for b in body if not isinstance(b, (ast.Import, ast.ImportFrom))] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


@functools.lru_cache(maxsize=256)
def _module_code(name: str) -> str:
    """The normalized source of module ``name``, read from its file (without importing it)."""

    try:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:  # no such module, or one without a file
            return f"<unavailable {name}>"
        with open(spec.origin, encoding="utf-8") as f:
            return _normalized_source(f.read())
    except (ImportError, AttributeError, TypeError, ValueError, OSError):
        return f"<unavailable {name}>"


def code_hash(fn: Callable, modules: tuple[str, ...] = ()) -> str:
    """sha256 (16 hex digits) of ``fn``'s code and the named modules' code (see AnalysisSpec)."""
    try:
        own = _normalized_source(inspect.getsource(fn))
    except (OSError, TypeError):  # defined interactively: only its name is known
        own = f"<source unavailable {getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}>"
    h = hashlib.sha256(own.encode())
    for m in sorted(set(modules)):
        h.update(f"\0{m}\0".encode() + _module_code(m).encode())
    return h.hexdigest()[:16]


def _same_type(val: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(val, bool):
        return isinstance(val, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(val, (int, float))
    if isinstance(default, list):  # a non-empty default also fixes the type of the items
        return isinstance(val, list) and (not default or all(_same_type(v, default[0]) for v in val))
    return isinstance(val, type(default))


REGISTRY: dict[str, AnalysisSpec] = {}


def register(spec: AnalysisSpec) -> AnalysisSpec:
    REGISTRY[spec.name] = spec
    return spec


PRECISIONS = ("float32", "bfloat16")
"""``precision`` parameter of the analyses: float32 (default) or bfloat16 (about 3x faster on CPUs
with AVX-512 BF16; trust it only where a pilot in both precisions agrees: ``bench/real_models.py``).
Every stored row carries the precision that produced it."""


