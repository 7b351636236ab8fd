"""The import graph of `pipeline/` (DESIGN's floors): no import circle, no library module importing a tool, and
no import from a lower floor to a higher one.

The graph is read from the source with `ast`: every `import` and `from ... import` statement, inside functions
too (a lazy import still ties the two modules), relative ones resolved against their package. An arrow goes to
the most specific module named: `from pipeline.data import loader` is an arrow to pipeline.data.loader,
`from pipeline.data import load_task` one to the package pipeline.data (its __init__). A package's __init__
running before its submodules is Python's doing, not an arrow. The registries' by-name imports (`importlib`,
`get_method`) are not arrows either: a method module imports its registry, never the other way round.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

PIPELINE = REPO / "pipeline"
TOOLS = "pipeline.tools"

# Floors, top down (DESIGN.md): stages and tools; the method families with the loops they run; the params
# schemas, which check names against the benchmarks and the model libraries (so they stand above data and
# models); models / data / losses; leaf utilities. Keys are the top-level modules and packages of pipeline/
# (a package's floor is every module's in it). A module may import its own floor or a lower one, never a
# higher one; a new top-level module needs a floor here.
FLOORS = {
    "stages": 4, "tools": 4,
    "continual": 3, "compression": 3, "pretraining": 3, "training": 3,
    "params": 2, "evaluation": 2, "validation": 2,
    "models": 1, "data": 1, "losses": 1,
    "errors": 0, "paths": 0, "io": 0, "sections": 0, "names": 0, "registry": 0, "runtime": 0, "metrics": 0,
    "optim": 0, "checkpoint": 0, "plots": 0, "distributed": 0,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (a package by its __init__)."""
    return {module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def imports(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The modules of `known` that `module`'s source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:  # `import pipeline.a.b` names pipeline.a.b; a name in a module: the module
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports(p.read_text(), m, p.name == "__init__.py", known) for m, p in mods.items()}


def find_circle(arrows: dict[str, set[str]]) -> list[str] | None:
    """One circle of `arrows` (a -> b -> ... -> a), or None: a depth-first search that meets a module still on
    its path."""
    done: set[str] = set()
    for start in sorted(arrows):
        if start in done:
            continue
        path, stack = [start], [iter(sorted(arrows.get(start, ())))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                done.add(path.pop())
                stack.pop()
            elif nxt in path:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in done:
                path.append(nxt)
                stack.append(iter(sorted(arrows.get(nxt, ()))))
    return None


def floor(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return FLOORS.get(top)


GRAPH = graph()


def test_the_reader_sees_lazy_relative_and_from_package_imports():
    """The reader itself, on the code as it stands and on small sources."""
    assert "pipeline.data.images" in GRAPH["pipeline.data.sources"]  # relative, inside a method
    assert "pipeline.models.clip" in GRAPH["pipeline.params"]  # absolute, inside a function
    assert "pipeline.data.loader" in GRAPH["pipeline.stages.common"]  # `from pipeline.data import loader`
    known = {"pipeline", "pipeline.a", "pipeline.a.b", "pipeline.a.c", "pipeline.d"}
    source = "from . import c\nfrom .b import x\ndef f():\n    from ..d import y\n    import pipeline.a.b\n"
    assert imports(source, "pipeline.a.c", False, known) == {"pipeline.a.b", "pipeline.d"}  # `. import c`: itself
    assert imports(source, "pipeline.a", True, known) == {"pipeline.a.c", "pipeline.a.b", "pipeline.d"}  # an __init__
    assert imports("from pipeline.a import z\n", "pipeline.d", False, known) == {"pipeline.a"}  # a name, not a module


def test_the_circle_finder_finds_one():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_circle({"a": {"a2"}, "a2": {"b"}, "b": {"a2"}}) == ["a2", "b", "a2"]


def test_no_import_circle():
    circle = find_circle(GRAPH)
    assert circle is None, f"modules that import each other: {' -> '.join(circle)}"


def test_no_library_module_imports_a_tool():
    wrong = sorted(f"{m} -> {t}" for m, ts in GRAPH.items() if not m.startswith(TOOLS)
                   for t in ts if t == TOOLS or t.startswith(TOOLS + "."))
    assert not wrong, f"the library imports command-line tools (pipeline/tools/ imports the library, not the other way): {wrong}"


def test_every_module_has_a_floor():
    unplaced = sorted(m for m in GRAPH if m != "pipeline" and floor(m) is None)
    assert not unplaced, f"give these a floor in tests/test_imports.py FLOORS: {unplaced}"


def test_no_import_runs_back_up():
    up = sorted(f"{m} (floor {floor(m)}) -> {t} (floor {floor(t)})" for m, ts in GRAPH.items() for t in ts
                if m != "pipeline" and t != "pipeline" and floor(t) > floor(m))
    assert not up, f"imports from a lower floor to a higher one: {up}"


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_every_floor_names_a_module(name):
    assert (PIPELINE / f"{name}.py").is_file() or (PIPELINE / name / "__init__.py").is_file()
