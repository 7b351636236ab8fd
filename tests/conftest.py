"""Shared fixtures: micro params, a throw-away git+DVC copy of the project, and a command runner for it.

Nothing here hard-codes where the repository or its virtual environment lives: the repository is the parent
of this folder and the venv is the folder of the running interpreter (`sys.executable`), so CI may clone
anywhere.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent  # the venv's bin/ (python, dvc); not resolved: a venv python is a symlink

# Top-level files a project copy needs besides the `pipeline` package (copied when present).
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "pytest.ini",
                 "images/README.md", "datasets/README.md", "Makefile", "requirements.txt")
MICRO_TASKS = {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}, "fill": {"prev": "colour"}}
STAGE_COMMANDS = [("check",), ("prepare",), ("pretrain",), ("zero_shot",), ("prototypes",), *(("train", t) for t in MICRO_TASKS), ("evaluate",),
                  ("target",), ("teacher",), ("student_alone",), ("distill",), ("cohort",)]

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Pipeline Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "Pipeline Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "dvc: drives the dvc CLI (repro, exp run, metrics diff) in a temporary git copy")


def committed_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def make_micro_params() -> dict:
    """The committed params.yaml with tiny sizes and three tasks of the facet world (the quickest benchmark to
    generate; the default `domains` benchmark has its own smoke run): seconds per stage on a laptop CPU."""
    p = copy.deepcopy(committed_params())
    p["data"]["benchmark"] = "facets"
    p["data"].update(train_per_class=6, test_per_class=4, corpus_size=256)
    # Warm-ups as long as the runs (a longer one is refused), at the rates the committed warm-ups reach at
    # these steps: the same learning rate at every step as the committed rates and warm-ups would give.
    p["pretrain"].update(steps=4, batch_size=32, warmup_steps=4, lr=p["pretrain"]["lr"] * 4 / p["pretrain"]["warmup_steps"])
    p["train"].update(steps=3, batch_size=8, warmup_steps=3, lr=p["train"]["lr"] * 3 / p["train"]["warmup_steps"])
    p["eval"].update(batch_size=64)
    # The DVC tests change loss.dis_weight and need the micro chain's coarse accuracies (4 test images a class,
    # 3 steps) to move with it: at the default's tau 0.1 they happen not to (the models do change), at 1.0 they do.
    p["loss"]["tau"] = 1.0
    p["tasks"] = copy.deepcopy(MICRO_TASKS)
    # Compression branch: 28 joint classes x 2 images, one epoch each, a 1-block student.
    p["target"].update(train_per_class=2, test_per_class=1)
    p["teacher"].update(epochs=1, batch_size=16)
    p["distill"].update(epochs=1, batch_size=16, warmup_steps=1)
    p["distill"]["token"]["l2l_every"] = 1
    p["distill"]["token"]["student"].update(d_model=16, n_layers=1, n_heads=2, d_ff=32)
    p["cohort"].update(epochs=1, batch_size=8, warmup_steps=1)  # 7 steps of two ShuffleNets
    p["cohort"]["embed_dim"] = 16
    return p


def rejected_params(raw: dict) -> str:
    """The ParamsError message of params `raw`, checked to be one line."""
    from pipeline.params import Params, ParamsError

    with pytest.raises(ParamsError) as info:
        Params.from_dict(raw)
    message = str(info.value)
    assert "\n" not in message, f"the error should be one line: {message!r}"
    return message


def run_in(root: Path, monkeypatch, module: str, *argv: str) -> None:
    """`python -m <module> argv` in-process, with `root` as the working directory (params.yaml there): no
    interpreter start-up per call. The torch thread count a stage sets is put back afterwards."""
    monkeypatch.chdir(root)
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    _call_main(module, argv)


def run_captured(root: Path, module: str, *argv: str) -> str:
    """`run_in` for session fixtures (no monkeypatch there): cwd and the environment put back afterwards;
    returns what the module printed to stdout."""
    saved = {k: os.environ.pop(k) for k in ("PIPELINE_PARAMS", "DVC_STAGE") if k in os.environ}
    out = io.StringIO()
    try:
        with contextlib.chdir(root), contextlib.redirect_stdout(out):
            _call_main(module, argv)
    finally:
        os.environ.update(saved)
    return out.getvalue()


def _call_main(module: str, argv) -> None:
    import importlib

    import torch

    threads = torch.get_num_threads()
    try:
        importlib.import_module(module).main(list(argv))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one torch thread is faster than two fighting over a busy machine (use per module with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def micro_params() -> dict:
    return make_micro_params()


def _ignore_build_junk(_dir, names):
    return [n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))]


@dataclass
class Project:
    """A copy of the project in its own git repository, with the env every command there runs under."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, check: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a command with cwd = the copy; stdout and stderr are captured as text."""
        proc = subprocess.run(list(args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
            )
        return proc

    def python(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("python", *args, **kw)

    def stage(self, module: str, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.python("-m", f"pipeline.stages.{module}", *args, **kw)

    def dvc(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("dvc", *args, **kw)

    def git(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("git", *args, **kw)

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def commit(self, message: str) -> None:
        self.git("add", "-A", check=True)
        self.git("commit", "-q", "--no-verify", "-m", message, check=True)


def project_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DVC_", "GIT_", "PIPELINE_"))}
    env.pop("PYTHONPATH", None)  # the copy's own `pipeline` must be the one imported (cwd, via -m)
    env.update(GIT_IDENTITY)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(VENV_BIN.parent),
        DVC_SITE_CACHE_DIR=str(scratch / "dvc-site-cache"),
        DVC_NO_ANALYTICS="1",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def make_project(root: Path, params: dict, scratch: Path | None = None) -> Project:
    """Copy the pipeline package and project files into `root`, write `params`, git init and commit."""
    root = Path(root)
    scratch = Path(scratch) if scratch is not None else root.parent / f"{root.name}-scratch"
    root.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=_ignore_build_junk)
    for name in PROJECT_FILES:
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    project = Project(root=root, env=project_env(scratch))
    project.write_params(params)
    project.git("-c", "init.defaultBranch=main", "init", "-q", check=True)
    project.commit("project copy with micro params")
    return project


@pytest.fixture
def project_copy(tmp_path, micro_params) -> Project:
    return make_project(tmp_path / "project", micro_params, tmp_path / "scratch")


# --- the two micro runs shared by test_pipeline.py and test_distill_stages.py ------------------------------


def pipeline_params() -> dict:
    """The micro params (facet world: a micro model learns it in three steps, so a params change moves the
    accuracy rows), on one thread: copies A and B run side by side on 2 cores without oversubscribing."""
    params = make_micro_params()
    params["runtime"]["threads"] = 1
    return params


@dataclass
class Background:
    project: Project
    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float = 900) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        return rc, self.log.read_text()


@pytest.fixture(scope="session")
def dvc_started(tmp_path_factory):
    """Copy B with `dvc repro` running in the background (output to a file: a pipe could fill and block)."""
    base = tmp_path_factory.mktemp("dvc")
    project = make_project(base / "project", pipeline_params(), base / "scratch")
    log = base / "repro.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["dvc", "repro"], cwd=project.root, env=project.env, stdout=out, stderr=subprocess.STDOUT, text=True)
    yield Background(project, proc, log)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session", autouse=True)
def _start_dvc_repro_first(request):
    """Copy B's `dvc repro` is the longest set-up of the suite and runs on one thread: started before the
    first test (when any selected test needs it), it runs beside the others instead of being waited for."""
    if any("dvc_started" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("dvc_started")


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory, dvc_started):
    """Copy A: every stage's entry point (`main(argv)` of pipeline.stages.<name>, in this process: ten
    interpreter and library start-ups fewer; copy B runs the same commands as processes under DVC), in DAG
    order; stdout of each, by stage name."""
    base = tmp_path_factory.mktemp("micro")
    project = make_project(base / "project", pipeline_params(), base / "scratch")
    stale = project.root / "data" / "tasks" / "size" / "task.json"  # a task from an earlier params.yaml
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n")
    outputs = {}
    for module, *args in STAGE_COMMANDS:
        outputs["@".join([module, *args])] = run_captured(project.root, f"pipeline.stages.{module}", *args)
    return project, outputs
