"""dvc.yaml lists, for each stage, the pipeline/ code the stage runs, so that a code change reruns it.

The code a stage runs is the transitive closure of the pipeline modules its command imports, at module level
or inside a function (a lazy import still runs), read from the source with `ast`. The method registry imports
its methods by name (`get_method`), so a stage that calls it runs every method module."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from conftest import REPO

PIPELINE = REPO / "pipeline"
# Registries import their method modules by name (`get_method`), for their callers.
REGISTRIES = {"pipeline.continual.registry": "pipeline.continual", "pipeline.compression.registry": "pipeline.compression"}


def module_path(name: str) -> Path | None:
    """pipeline/a/b.py or pipeline/a/b/__init__.py of module `pipeline.a.b`, or None if not ours."""
    if name != "pipeline" and not name.startswith("pipeline."):
        return None
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every pipeline module `path` imports, and the packages on the way (their __init__ runs too)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    uses_registry = False
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Name) and node.id in ("get_method", "all_methods"):
            uses_registry = True
    if uses_registry and module_name(path) not in REGISTRIES:
        for registry, package in REGISTRIES.items():
            if {f"{m}.{f}" for m in (registry, package) for f in ("get_method", "all_methods")} & names:
                names.update(f"{package}.{m}" for m in _method_modules(registry))
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_path(prefix) is not None:
                found.add(prefix)
    return found


def _method_modules(registry: str) -> list[str]:
    import importlib

    module = importlib.import_module(registry)
    return list(getattr(module, "_ALL_MODULES", module.MODULES).values())


def runs_code(path: Path) -> bool:
    """A package __init__ holding only a docstring runs nothing: no dependency needed."""
    body = ast.parse(path.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def closure(module: str) -> set[Path]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_path(name)))
    return {p for p in map(module_path, seen) if runs_code(p)}


def stages() -> list[tuple[str, str, list[str]]]:
    out = []
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        module = re.match(r"python -m ([\w.]+)", body["cmd"]).group(1)
        out.append((name, module, body.get("deps", [])))
    return out


@pytest.mark.parametrize("name, module, deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_cover_the_code_it_imports(name, module, deps):
    listed = [REPO / d for d in deps if d.startswith("pipeline")]
    assert all(p.exists() for p in listed), f"{name}: a listed dependency does not exist"
    missing = sorted(
        str(p.relative_to(REPO)) for p in closure(module) if not any(p == d or d in p.parents for d in listed)
    )
    assert not missing, f"dvc.yaml stage {name!r} runs these modules without listing them as deps: {missing}"


@pytest.mark.parametrize("name, module, deps", stages(), ids=[s[0] for s in stages()])
def test_stage_deps_list_only_code_it_runs(name, module, deps):
    """The converse: no listed file is code the stage never runs (a change to it would rerun the stage for
    nothing). A folder is listed for brevity where the stage runs (nearly) all of it, so it must hold some of
    that code; a folder without Python (model configs) holds data its parent folder's code reads."""
    runs = closure(module)
    idle = []
    for dep in (d for d in deps if d.startswith("pipeline")):
        path = REPO / dep
        if path.is_dir():
            where = path if any(path.rglob("*.py")) else path.parent
            if not any(where in p.parents for p in runs):
                idle.append(dep)
        elif path not in runs:
            idle.append(dep)
    assert not idle, f"dvc.yaml stage {name!r} lists code it does not run: {idle}"


def test_the_closure_follows_lazy_and_registry_imports():
    """The reader itself: a function-level import and the registry's by-name imports are seen."""
    train = closure("pipeline.stages.train")
    assert PIPELINE / "continual" / "zscl.py" in train  # by name, through get_method
    assert PIPELINE / "models" / "clip.py" in closure("pipeline.stages.prototypes")
    assert PIPELINE / "stages" / "__init__.py" not in train  # docstring only
    assert PIPELINE / "compression" / "l2l.py" not in train
    assert PIPELINE / "compression" / "channel_matching.py" in closure("pipeline.stages.distill")  # by name
    assert not any(PIPELINE / "compression" in p.parents for p in train)  # the params schemas import no method


@pytest.mark.parametrize("name", ["pretrain", "train"])
def test_a_checkpoint_records_the_params_its_stage_reads(name, micro_params):
    """models/<name>/model.json holds the params of the keys dvc.yaml lists for the stage, no more: a change
    to another key must not change the checkpoint's hash (and rerun every stage after it)."""
    import importlib

    from pipeline.params import Params

    module = importlib.import_module(f"pipeline.stages.{name}")
    dvc_params = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]
    dvc_params = dvc_params.get("do", dvc_params)["params"]
    assert module.PARAMS == dvc_params
    params = Params.from_dict(micro_params, libraries=())
    recorded = params.select(module.PARAMS)
    assert set(recorded) == {k.split(".")[0] for k in dvc_params}
    if name == "train":
        assert recorded["eval"] == {"batch_size": micro_params["eval"]["batch_size"]}
    else:  # E0 reads no task and evaluates nothing (stage zero_shot): a new chain must not change its hash
        assert "tasks" not in recorded and "eval" not in recorded
    other = dict(micro_params, distill={**micro_params["distill"], "epochs": 99})
    assert Params.from_dict(other, libraries=()).select(module.PARAMS) == recorded


def test_student_alone_reads_every_distill_key_but_the_methods():
    """The student alone is trained like the distilled one: every `distill` key that shapes the student or its
    training is a param of its stage (a new key left out would let DVC restore a stale baseline); only the
    method's own keys are not, so a method sweep trains it once per student and seed."""
    from pipeline.params.compression import DistillParams

    methods_own = {"method", "teacher", "kd", "feature", "matching"}
    listed = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["student_alone"]["params"]
    read = {key.split(".", 1)[1] for key in listed if key.startswith("distill.")}
    assert read == set(DistillParams.model_fields) - methods_own
