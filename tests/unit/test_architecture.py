"""The layout states the design: layers import only downwards, the import graph has no circle,
the CLI starts without the heavy libraries, and the CLI's copies of defaults equal the originals."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"probes": ROOT / "probes", "circuits": ROOT / "circuits",
            "experiments": ROOT / "experiments", "iclwb_app": ROOT / "app" / "iclwb_app"}
# Lower layers first; a module may import only from its own layer or a lower one.
LAYERS = ["probes", "circuits", "experiments.tasks", "experiments.models", "experiments.studies",
          "experiments.runs", "experiments.cli", "iclwb_app"]


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            while n and n not in known:
                n = n.rpartition(".")[0]
            if n:
                found.add(n)
    return found


def _layer(module: str) -> int:
    return max(i for i, prefix in enumerate(LAYERS) if module == prefix or module.startswith(prefix + ".")
               or (prefix == "experiments" and module == "experiments"))


GRAPH = {m: _imports(p, set(_modules())) - {m} for m, p in _modules().items()}


def test_every_module_imports_only_its_own_layer_or_lower():
    bad = [f"{m} -> {d}" for m, deps in GRAPH.items() if m != "experiments"
           for d in deps if d != "experiments" and _layer(d) > _layer(m)]
    assert not bad, "imports that point up a layer:\n" + "\n".join(sorted(bad))


def test_the_import_graph_has_no_circle():
    # A module importing its own package's __init__ (which imports the module back) is how Python
    # packages re-export; every other circle is a design error. Tarjan's strongly connected
    # components over the graph without those parent edges.
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import circles: {cycles}"


def test_the_layers_import_without_the_app_and_the_cli_starts_light():
    code = ("import sys, probes, circuits, experiments, experiments.cli.main; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'iclwb_app', 'streamlit', 'transformer_lens'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_clis_copies_of_defaults_equal_the_originals():
    from experiments.cli import power as cli_power
    from experiments.cli import study as cli_study
    from experiments.runs import study
    from probes import stats

    assert (cli_power.ALPHA, cli_power.POWER) == (stats.ALPHA, stats.POWER)
    assert cli_study.FULL_CONFIG == study.FULL_CONFIG and cli_study.FULL_CONFIG.exists()


def test_every_error_the_project_defines_is_a_workbench_error():
    import importlib
    import inspect

    from probes.errors import WorkbenchError

    found, bad = [], []
    for name in _modules():
        if name.endswith("__main__"):
            continue
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            # errors; signals that stop a forward pass (StopForward) are control flow, never shown
            if (inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == name
                    and obj.__name__.endswith(("Error", "Exception"))):
                found.append(obj)
                if not issubclass(obj, WorkbenchError):
                    bad.append(f"{name}.{obj.__name__}")
    assert len(found) >= 15 and not bad, bad
@pytest.mark.parametrize("pkg", sorted(PACKAGES))
def test_modules_and_functions_are_short(pkg):
    long_modules, long_functions = [], []
    for path in PACKAGES[pkg].rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 500:
            long_modules.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not long_modules and not long_functions, (long_modules, long_functions)
