"""The house rules of the package: no import cycles between modules of ``mvit`` and no import against the layering.

Read from the source (``ast``), so that lazy imports count: module-level imports, imports inside functions and
``importlib.import_module("literal")`` are all edges. An edge goes to the module imported: ``import a.b`` and
``from a import b`` (``b`` a submodule) give ``a.b``, ``from a.b import name`` gives ``a.b``. Importing ``a.b.c``
also runs the ``__init__`` of the packages ``a`` and ``a.b``: those are edges too, except to the importer's own
packages (a module of ``a.b`` that imports its sibling ``a.b.c`` runs no ``a.b/__init__`` it is not already
part of), so ``from . import foo`` in a package is an edge to the submodule, not a cycle with ``__init__``.

The one-line shims at the old paths (``mvit/_moved.py``) are left out of the graph: they exist to import the new
module, and nothing but :func:`test_a_shim_warns_and_is_the_new_module` may import them.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIM_MARKER = '__import__("mvit._moved"'

# importer prefix -> prefixes it must not import.
FORBIDDEN = {
    "mvit.models": ("mvit.config", "mvit.checkpoint", "mvit.engine", "mvit.data", "mvit.runtime", "mvit.api"),
    "mvit.data": ("mvit.engine",),
    "mvit.runtime": ("mvit.engine",),
}
# What the datasets of a project (projects/*/data) may import of mvit.
PROJECT_DATA_ALLOWED = ("mvit.data", "mvit.models", "mvit.checkpoint", "mvit.config", "mvit.errors", "mvit.utils")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_shim(path: Path) -> bool:
    return path.read_text().lstrip().startswith(SHIM_MARKER)


def _imports(path: Path) -> set[str]:
    """Every module name ``path`` imports (absolute, relative ones resolved), at any depth of its code."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{alias.name}" for alias in node.names}  # kept only where it is a module
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.add(node.args[0].value)
    return found


def _sources(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if ".venv" not in p.parts)


def _graph() -> dict[str, set[str]]:
    """module -> the mvit modules it imports (shims left out), with the package ``__init__`` edges above."""
    paths = {_module_name(p): p for p in _sources("mvit") if not _is_shim(p)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = set()
        for target in _imports(path) & set(paths):
            parts = target.split(".")
            edges |= {".".join(parts[:n]) for n in range(1, len(parts) + 1)} & set(paths)
        # The importer's own packages ran their __init__ before it: importing them (``from . import x``) runs nothing.
        graph[name] = {t for t in edges if not (name == t or name.startswith(t + "."))}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_between_modules_of_mvit() -> None:
    graph = _graph()
    described = []
    for component in _cycles(graph):
        inside = {m: sorted(graph[m] & set(component)) for m in component}
        described.append("; ".join(f"{m} -> {', '.join(t)}" for m, t in inside.items()))
    assert not described, "import cycles:\n" + "\n".join(described)


def test_imports_follow_the_layering() -> None:
    offending = []
    for name, targets in _graph().items():
        for importer, forbidden in FORBIDDEN.items():
            if _within(name, (importer,)):
                offending += [f"{name} -> {t}" for t in sorted(targets) if _within(t, forbidden)]
    for path in _sources("projects"):
        if "data" in path.relative_to(ROOT).parts[2:-1]:  # projects/<project>/data/...
            bad = {t for t in _imports(path) if _within(t, ("mvit",)) and not _within(t, PROJECT_DATA_ALLOWED)}
            bad = {t for t in bad if t.rpartition(".")[0] not in bad}  # a module, not also each name taken from it
            offending += [f"{path.relative_to(ROOT)} -> {t}" for t in sorted(bad)]
    assert not offending, "imports against the layering:\n" + "\n".join(offending)


def test_nothing_imports_a_shim() -> None:
    shims = {_module_name(p) for p in _sources("mvit") if _is_shim(p)}
    assert shims, "no shim found: update SHIM_MARKER"
    this = Path(__file__).resolve()
    offending = [
        f"{path.relative_to(ROOT)} -> {target}"
        for path in _sources("mvit", "projects", "tools", "tests")
        if path.resolve() != this
        for target in sorted(_imports(path) & shims)
    ]
    assert not offending, "the old paths are for users only:\n" + "\n".join(offending)


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [("mvit.engine.augment", "mvit.data.augment", "_STAND_INS"), ("mvit.models.build", "mvit.api", "create_model")],
)
def test_a_shim_warns_and_is_the_new_module(old: str, new: str, name: str) -> None:
    import importlib

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        module = importlib.import_module(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_importing_mvit_loads_no_engine_runtime_data_plotting_or_project() -> None:
    code = """
import json, sys
import mvit
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[:2] in (["mvit", "engine"], ["mvit", "runtime"],
    ["mvit", "data"], ["mvit", "_moved"]) or m.split(".")[0] in ("projects", "matplotlib", "timm", "PIL"))))
"""
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []
