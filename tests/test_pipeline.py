"""End-to-end tests on the micro configuration, in temporary git copies of the project.

Two copies are built once per session (conftest.py) and shared:
- `micro_run` (copy A) runs every stage's command line by hand, in DAG order (test_distill_stages.py reads
  its compression branch too);
- `dvc_repro` (copy B) runs `dvc repro` with the same params, started in the background when copy A starts
  and left to run behind the other test modules (2 cores: it costs the suite little wall time).
A second run of the same params is therefore also a check that `dvc repro` runs exactly the stage commands.
The DVC tests then drive copy B further: a no-op `dvc repro`, a commit, `dvc exp run -S`, `dvc metrics diff`.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from safetensors import safe_open

from conftest import REPO, VENV_BIN, Project, make_micro_params, make_project, pipeline_params, run_in
from pipeline import metrics

TASKS = ["shape", "colour", "fill"]
CLIP_MODELS = ["e0", *TASKS]
BRANCH_MODELS = ["cnn", "student", "student_alone", "cohort"]  # the compression branch's classifiers
MODELS = [*CLIP_MODELS, *BRANCH_MODELS]
# zero_shot (E0's row 0) runs after pretrain and before evaluate, beside prototypes in either order
CL_STAGES = ["prepare", "pretrain", "prototypes", *(f"train@{t}" for t in TASKS), "evaluate"]
DISTILL_STAGES = ["target", "teacher", "student_alone", "distill", "cohort"]
ALL_STAGES = ["check", *CL_STAGES, "zero_shot", *DISTILL_STAGES]
METRIC_FILES = ("metrics/cl.json", "metrics/accuracy_matrix.json", "metrics/zero_shot.json", "metrics/teacher.json",
                "metrics/distill.json", "metrics/distill_per_class.json", "metrics/student_alone.json",
                "metrics/cohort.json")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUNNING = re.compile(r"^Running stage '([^']+)'", re.MULTILINE)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read(project: Project, rel: str):
    return json.loads((project.root / rel).read_text())


@pytest.fixture(scope="module")
def dvc_repro(dvc_started):
    """Copy B after its first `dvc repro`: the output and a snapshot of what it wrote."""
    rc, output = dvc_started.wait()
    assert rc == 0, f"dvc repro failed:\n{output[-6000:]}"
    project = dvc_started.project
    snapshot = {rel: (project.root / rel).read_bytes() for rel in METRIC_FILES}
    snapshot.update({f"metrics/tasks/{t}.json": (project.root / f"metrics/tasks/{t}.json").read_bytes() for t in TASKS})
    # The checkpoint's JSON too: anything run-dependent in it (a wall time) changes the output's DVC hash
    # and makes every downstream stage re-run although the weights are identical.
    snapshot.update({f"models/{m}/model.json": (project.root / f"models/{m}/model.json").read_bytes() for m in MODELS})
    weights = {m: _sha(project.root / "models" / m / "model.safetensors") for m in MODELS}
    return project, output, snapshot, weights


@pytest.fixture(scope="module")
def dvc_noop(dvc_repro):
    project, _, _, _ = dvc_repro
    return project.dvc("repro", check=True)


@pytest.fixture(scope="module")
def dvc_exp(dvc_repro, dvc_noop):
    """Commit the first results (so HEAD holds them), then `dvc exp run -S loss.dis_weight=0.0`."""
    project, _, _, _ = dvc_repro
    project.commit("micro results")
    before = {m: _sha(project.root / "models" / m / "model.safetensors") for m in MODELS}
    proc = project.dvc("exp", "run", "-S", "loss.dis_weight=0.0", check=True)
    after = {m: _sha(project.root / "models" / m / "model.safetensors") for m in MODELS}
    return project, proc, before, after


# --- (1) smoke run of every stage ---------------------------------------------------------------------------


def test_stages_write_their_outputs(micro_run):
    project, outputs = micro_run
    root = project.root
    for name in MODELS:
        assert (root / "models" / name / "model.safetensors").stat().st_size > 1000
        assert (root / "models" / name / "model.json").is_file()
    for task in TASKS:
        assert (root / "data" / "tasks" / task / "task.json").is_file()
        assert (root / "data" / "prototypes" / f"{task}.safetensors").is_file()
        assert (root / "metrics" / "tasks" / f"{task}.json").is_file()
    assert sorted(p.name for p in (root / "data" / "tasks").iterdir()) == sorted(TASKS)  # stale `size` removed
    assert (root / "data" / "corpus").is_dir()
    pngs = sorted((root / "metrics" / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["accuracy_matrix.png", "task_accuracy.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in pngs)
    assert "prepared 3 tasks (shape, colour, fill)" in outputs["prepare"]
    assert re.search(r"transfer [\d.]+, average [\d.]+, last [\d.]+", outputs["evaluate"])
    assert "target count+colour: 28 classes, 56 train / 28 test images" in outputs["target"]
    assert re.search(r"teacher [\d.]+% \| student \(token, token\) [\d.]+%", outputs["distill"])
    assert re.search(r"student token alone: [\d.]+%", outputs["student_alone"])
    assert re.search(r"cohort mcl: shufflenet_v2_x0_5 [\d.]+%, shufflenet_v2_x0_5 [\d.]+%; ensemble [\d.]+%", outputs["cohort"])
    for task in TASKS:
        cost = _read(project, f"metrics/cost/{task}.json")
        assert isinstance(cost["seconds"], float) and cost["peak_memory_mb"] > 100  # torch alone is > 100 MB resident
    leftovers = [p for p in root.rglob("*.tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_outputs_follow_the_umask(micro_run):
    """Issue 36 (3): checkpoints were 0600 (safetensors' own rename), the same files from `dvc checkout` 0644."""
    import os

    project, _ = micro_run
    mask = os.umask(0)
    os.umask(mask)
    files = [p for d in ("models", "data", "metrics") for p in (project.root / d).rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files)
    wrong = {p.relative_to(project.root).as_posix(): oct(p.stat().st_mode & 0o777) for p in files
             if p.stat().st_mode & 0o777 != 0o666 & ~mask}
    assert not wrong, wrong


def test_a_diverging_task_stops_with_one_line_and_writes_nothing(micro_run, tmp_path, monkeypatch, capsys):
    """Issue 36 (1): a learning rate that diverges (finite, so validation passes) trained to NaN weights and
    exited 0. Now the first non-finite loss term stops train@<task>: one line naming the task, the step and
    the term, exit 2, and the previous outputs left as they were."""
    project, _ = micro_run
    copy = tmp_path / "copy"
    shutil.copytree(project.root, copy, ignore=shutil.ignore_patterns(".git", ".dvc"))
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["lr"] = 1e30
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    before = _tree_hashes(Project(copy), "models", "metrics")
    with pytest.raises(SystemExit) as info:
        run_in(copy, monkeypatch, "pipeline.stages.train", "shape")
    stderr = capsys.readouterr().err
    err = [line for line in stderr.splitlines() if line.startswith("error:")]  # the rest: the progress bar
    assert info.value.code == 2 and len(err) == 1 and "Traceback" not in stderr, stderr
    assert re.match(r"error: train shape \(dual_teacher\): loss term '\w+' is (nan|inf|-inf) at step [12]; nothing was written", err[0])
    assert _tree_hashes(Project(copy), "models", "metrics") == before
    assert not list(copy.rglob("*.tmp"))


def test_cl_json(micro_run):
    project, _ = micro_run
    cl = _read(project, "metrics/cl.json")
    assert set(cl) == {"transfer", "average", "last", "method", "zero_shot"}
    assert cl["method"] == "dual_teacher"
    assert cl["zero_shot"] == _read(project, "metrics/zero_shot.json")
    matrix = _read(project, "metrics/accuracy_matrix.json")
    assert {k: cl[k] for k in ("transfer", "average", "last")} == metrics.summary(matrix["matrix"])


def test_zero_shot_json(micro_run):
    project, _ = micro_run
    zero_shot = _read(project, "metrics/zero_shot.json")
    assert set(zero_shot) == {"transfer", "tasks"}
    assert list(zero_shot["tasks"]) == sorted(TASKS)  # write_json sorts keys
    for task in TASKS:
        entry = zero_shot["tasks"][task]
        assert set(entry) == {"accuracy", "chance"}
        classes = _read(project, f"data/tasks/{task}/task.json")["classes"]
        assert entry["chance"] == pytest.approx(100 / len(classes), abs=1e-4)
        assert 0 <= entry["accuracy"] <= 100
    row0 = [zero_shot["tasks"][t]["accuracy"] for t in TASKS]  # training order, not key order
    assert zero_shot["transfer"] == pytest.approx(metrics.zero_shot_transfer(row0), abs=1e-4)


def test_accuracy_matrix_json(micro_run):
    project, _ = micro_run
    matrix = _read(project, "metrics/accuracy_matrix.json")
    assert matrix["rows"] == CLIP_MODELS and matrix["columns"] == TASKS
    zero_shot = _read(project, "metrics/zero_shot.json")
    assert matrix["matrix"][0] == [zero_shot["tasks"][t]["accuracy"] for t in TASKS]
    for j, task in enumerate(TASKS, start=1):
        row = _read(project, f"metrics/tasks/{task}.json")
        assert row["task"] == task and row["method"] == "dual_teacher"
        assert list(row["accuracy"]) == sorted(TASKS)
        assert matrix["matrix"][j] == [row["accuracy"][t] for t in TASKS]
    assert all(0 <= a <= 100 for r in matrix["matrix"] for a in r)


@pytest.mark.parametrize("task", TASKS)
def test_dvclive_curves(micro_run, task):
    project, _ = micro_run
    folder = project.root / "metrics" / "train" / task
    tsvs = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.tsv")}
    names = {f"plots/metrics/loss/{k}.tsv" for k in ("ce", "con", "dis", "total")} | {"plots/metrics/lr.tsv"}
    assert names <= set(tsvs), sorted(tsvs)
    for rel in names:
        lines = tsvs[rel].read_text().splitlines()
        assert lines[0] == f"step\t{Path(rel).stem}"
        assert [int(line.split("\t")[0]) for line in lines[1:]] == [0, 1, 2]  # train.steps = 3
        assert all(float(line.split("\t")[1]) == float(line.split("\t")[1]) for line in lines[1:])  # no NaN
    assert (project.root / "dvc.yaml").read_bytes() == (REPO / "dvc.yaml").read_bytes(), "DVCLive rewrote dvc.yaml"


def test_logged_lr_is_the_rate_used_at_that_step(micro_run):
    project, _ = micro_run
    lines = (project.root / "metrics/train/shape/plots/metrics/lr.tsv").read_text().splitlines()[1:]
    train = make_micro_params()["train"]
    # warm-up over train.warmup_steps: step s trains with lr * (s + 1) / warmup_steps
    expected = [train["lr"] * (s + 1) / train["warmup_steps"] for s in range(train["steps"])]
    assert [float(line.split("\t")[1]) for line in lines] == pytest.approx(expected)


@pytest.mark.parametrize("name", BRANCH_MODELS)
def test_branch_checkpoints_load_without_pickle(micro_run, name):
    from pipeline.models import classifier

    project, _ = micro_run
    folder = project.root / "models" / name
    raw = (folder / "model.safetensors").read_bytes()
    assert raw[8:9] == b"{"  # a safetensors header, not a pickle
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    model, meta = classifier.load(folder)
    assert set(model.state_dict()) == keys and not model.training
    assert meta["kind"] == {"cnn": "cnn", "cohort": "cohort"}.get(name, "student")


@pytest.mark.parametrize("name", CLIP_MODELS)
def test_checkpoints_load_without_pickle(micro_run, name):
    from pipeline.models import clip as clip_lib

    project, _ = micro_run
    folder = project.root / "models" / name
    raw = (folder / "model.safetensors").read_bytes()
    # safetensors: an 8-byte little-endian header length, then a JSON header (not a pickle or a torch.save zip)
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and json.loads(raw[8 : 8 + header_len])
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
        logit_scale = f.get_tensor("logit_scale")
    assert "logit_scale" in keys and any(k.startswith("visual.") for k in keys)

    clip = clip_lib.load(folder)
    state = clip.model.state_dict()
    assert set(state) == keys
    assert float(state["logit_scale"]) == float(logit_scale)

    meta = json.loads((folder / "model.json").read_text())
    assert meta["arch"] == make_micro_params()["model"]["arch"] and meta["image_size"] == 32 and meta["name"] == name
    # the params that made it: the keys its stage reads (dvc.yaml), no more
    micro = make_micro_params()
    if name == "e0":  # E0 reads no task (its zero-shot row is the stage zero_shot's): a new chain keeps its hash
        recorded = meta["params"]["pretrain"]  # every key of the section, the defaults the micro params leave out too
        assert {k: recorded[k] for k in micro["pretrain"]} == micro["pretrain"] and recorded["ema"] is None
        assert "train" not in meta["params"]
        assert "tasks" not in meta["params"] and "eval" not in meta["params"]
    else:
        assert meta["params"]["train"]["steps"] == 3 and "pretrain" not in meta["params"]
    if name != "e0":
        assert meta["params"]["tasks"] == micro["tasks"] and meta["params"]["eval"] == {"batch_size": micro["eval"]["batch_size"]}
        assert meta["prev"] == make_micro_params()["tasks"][name]["prev"]
        assert meta["method"] == "dual_teacher"


def test_same_params_same_metrics(micro_run, dvc_repro):
    """Copy A (stages by hand) and copy B (`dvc repro`) ran the same params: byte-identical metrics."""
    project, _ = micro_run
    _, _, snapshot, weights = dvc_repro
    assert (project.root / "metrics/cl.json").read_bytes() == snapshot["metrics/cl.json"]
    for rel, content in snapshot.items():
        assert (project.root / rel).read_bytes() == content, rel
    # Stronger than the rounded metrics: the weights themselves are reproducible on CPU.
    assert {m: _sha(project.root / "models" / m / "model.safetensors") for m in MODELS} == weights


# --- (2) DVC behaviour --------------------------------------------------------------------------------------


@pytest.mark.dvc
def test_dvc_repro_runs_every_stage_in_order(dvc_repro):
    project, output, _, _ = dvc_repro
    ran = RUNNING.findall(output)
    # DVC may interleave the two branches; within each, the DAG order holds.
    assert sorted(ran) == sorted(ALL_STAGES)
    assert ran[0] == "check"  # every stage depends on its stamp: DVC runs it first
    assert [s for s in ran if s in CL_STAGES] == CL_STAGES
    assert ran.index("pretrain") < ran.index("zero_shot") < ran.index("evaluate")
    branch = [s for s in ran if s in DISTILL_STAGES]
    assert branch[0] == "target" and branch.index("teacher") < branch.index("distill")
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(ALL_STAGES)


@pytest.mark.dvc
def test_second_dvc_repro_runs_nothing(dvc_repro, dvc_noop):
    project, _, snapshot, _ = dvc_repro
    output = dvc_noop.stdout + dvc_noop.stderr
    assert RUNNING.findall(output) == []
    assert sorted(re.findall(r"Stage '([^']+)' didn't change", output)) == sorted(ALL_STAGES)
    assert "Data and pipelines are up to date" in output
    assert (project.root / "metrics/cl.json").read_bytes() == snapshot["metrics/cl.json"]


@pytest.mark.dvc
def test_exp_run_reruns_only_train_and_evaluate(dvc_exp):
    project, proc, before, after = dvc_exp
    output = proc.stdout + proc.stderr
    # check runs on any change of params.yaml; its stamp is constant, so only the stages reading loss run after it
    assert RUNNING.findall(output) == ["check", *(f"train@{t}" for t in TASKS), "evaluate"]
    for stage in ("prepare", "pretrain", "zero_shot", "prototypes", *DISTILL_STAGES):  # the CNN-teacher branch is untouched
        assert f"Stage '{stage}' didn't change" in output
    assert yaml.safe_load((project.root / "params.yaml").read_text())["loss"]["dis_weight"] == 0.0
    assert after["e0"] == before["e0"]
    assert all(after[t] != before[t] for t in TASKS)
    assert all(after[m] == before[m] for m in BRANCH_MODELS)


@pytest.mark.dvc
def test_metrics_diff_between_head_and_workspace(dvc_exp):
    project, _, _, _ = dvc_exp
    proc = project.dvc("metrics", "diff", "--all", "--json", check=True)
    diff = json.loads(proc.stdout)
    rows = sorted((path, key, v.get("old"), v.get("new")) for path, entries in diff.items() for key, v in entries.items())
    cl_rows = {key: (old, new) for path, key, old, new in rows if path == "metrics/cl.json"}
    assert {"transfer", "average", "last"} <= set(cl_rows)
    head = json.loads(project.git("show", "HEAD:metrics/cl.json", check=True).stdout)
    workspace = _read(project, "metrics/cl.json")
    for key in ("transfer", "average", "last"):
        assert cl_rows[key] == (head[key], workspace[key])
    assert head != workspace  # dis_weight changed the model, so the summary moved
    assert {p for p, *_ in rows} >= {"metrics/cl.json", "metrics/zero_shot.json", *(f"metrics/tasks/{t}.json" for t in TASKS)}


@pytest.fixture(scope="module")
def dvc_return(dvc_exp):
    """Back to the committed dis_weight after the dis_weight=0.0 experiment: DVC's run-cache holds that run."""
    project, _, before, _ = dvc_exp
    proc = project.dvc("exp", "run", "-S", "loss.dis_weight=0.2", check=True)
    return project, proc, before


@pytest.mark.dvc
def test_return_to_seen_params_restores_from_the_run_cache(dvc_return, dvc_repro):
    project, proc, before = dvc_return
    _, _, snapshot, _ = dvc_repro
    output = proc.stdout + proc.stderr
    # nothing trains again (check, cheap, may run: DVC's rewrite of params.yaml need not give the committed bytes)
    assert [s for s in RUNNING.findall(output) if s != "check"] == []
    for stage in (*(f"train@{t}" for t in TASKS), "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in output
    assert {m: _sha(project.root / "models" / m / "model.safetensors") for m in MODELS} == before
    for rel, content in snapshot.items():  # metrics (kept in git, not DVC's cache) restored too, byte for byte
        assert (project.root / rel).read_bytes() == content, rel


def _tree_hashes(project: Project, *folders: str) -> dict[str, str]:
    return {p.relative_to(project.root).as_posix(): _sha(p) for f in folders for p in sorted((project.root / f).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def dvc_compare(dvc_return):
    """`python -m pipeline.tools.compare` on the queue: the token comparison (two stages downstream of the teacher, the
    cheapest to run), one variant, a seed no run has used (so its stage must run, not come from the run-cache)."""
    project, _, _ = dvc_return
    before = _tree_hashes(project, "models", "data", "metrics")
    params_before = (project.root / "params.yaml").read_bytes()
    proc = project.python("-m", "pipeline.tools.compare", "--branch", "token", "--variants", "soft", "--seeds", "5",
                          check=True, timeout=400)
    return project, proc, before, params_before


@pytest.mark.dvc
def test_compare_runs_on_the_queue_and_leaves_the_workspace_alone(dvc_compare):
    project, proc, before, params_before = dvc_compare
    assert "dvc exp run --queue --name cmp-token-soft-s5" in proc.stdout and "dvc queue start --jobs" in proc.stdout
    summary = _read(project, "metrics/compare_token.json")
    # Only the stages the seed changes ran in the experiment: a compression seed redraws the target's images and
    # the teacher (compare.DISTILL_SEEDS); nothing of the continual branch ran.
    assert sorted(summary["stages_run"]) == ["check", "distill", "student_alone", "target", "teacher"]
    assert summary["variants"]["soft"]["seeds"] == [5]
    # the committed run, from the workspace
    assert summary["reference"] == {"distill": _read(project, "metrics/distill.json"),
                                    "alone": _read(project, "metrics/student_alone.json"),
                                    "cost": _read(project, "metrics/distill_cost.json"),
                                    "alone_cost": _read(project, "metrics/student_alone_cost.json")}
    compare_outputs = {"metrics/compare_token.json", "metrics/compare_token.md"}
    after = _tree_hashes(project, "models", "data", "metrics")
    assert {k: v for k, v in after.items() if k not in compare_outputs} == before
    assert (project.root / "params.yaml").read_bytes() == params_before


@pytest.mark.dvc
def test_a_failed_stage_says_how_to_restore_and_dvc_checkout_does(dvc_compare, dvc_repro, tmp_path):
    """DVC deletes a stage's outputs before it runs; when the stage then fails (here: params it reads through
    PIPELINE_PARAMS, which DVC does not see), its one error line says how to get them back, and that works."""
    project, _, _, _ = dvc_compare
    _, _, snapshot, _ = dvc_repro
    bad = yaml.safe_load((project.root / "params.yaml").read_text())
    bad["tasks"] = {"nope": {"prev": "e0"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    env = {**project.env, "PIPELINE_PARAMS": str(tmp_path / "bad.yaml")}
    proc = subprocess.run(["dvc", "repro", "--force", "--single-item", "evaluate"], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    [line] = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert "tasks.nope" in line and "DVC removed evaluate's outputs" in line
    assert not (project.root / "metrics/cl.json").exists()
    project.git("checkout", "--", "metrics", check=True)
    project.dvc("checkout", "--quiet", check=True)
    assert (project.root / "metrics/cl.json").read_bytes() == snapshot["metrics/cl.json"]
    assert project.dvc("status", "--quiet").returncode == 0


@pytest.mark.dvc
def test_a_bad_param_given_to_make_repro_changes_no_file(dvc_compare):
    project, _, _, params_before = dvc_compare
    before = _tree_hashes(project, "models", "data", "metrics")
    params = yaml.safe_load(params_before)
    params["train"]["lr"] = -1.0
    project.write_params(params)
    try:
        proc = project.run("make", "repro", f"VENV={VENV_BIN.parent}", timeout=120)
    finally:
        (project.root / "params.yaml").write_bytes(params_before)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "train.lr" in errors[0], proc.stderr
    assert "Running stage" not in proc.stdout + proc.stderr
    assert _tree_hashes(project, "models", "data", "metrics") == before


@pytest.mark.dvc
def test_the_images_folder_is_a_dependency(dvc_compare):
    """data.root (default images/) feeds check, prepare and target: a new image there makes them stale for DVC."""
    project, _, _, _ = dvc_compare
    new = project.root / "images" / "mine" / "train" / "cat" / "0.png"
    new.parent.mkdir(parents=True)
    new.write_bytes(PNG_MAGIC)
    try:
        status = json.loads(project.dvc("status", "--json", check=True).stdout)
    finally:
        shutil.rmtree(project.root / "images" / "mine")
    assert sorted(status) == ["check", "prepare", "target"]
    assert json.loads(project.dvc("status", "--json", check=True).stdout) == {}


@pytest.fixture(scope="module")
def dvc_bad_exp(dvc_compare):
    """`dvc exp run -S` with a value pipeline.params refuses, after the runs above: the outputs before and after."""
    project, _, _, _ = dvc_compare
    project.git("checkout", "--", "params.yaml", check=True)
    before = _tree_hashes(project, "models", "data", "metrics")
    before["HEAD:params.yaml"] = project.git("show", "HEAD:params.yaml", check=True).stdout
    runs = {}
    for setting in ("train.method=nonsense", "loss.dis_weight=abc"):
        runs[setting] = project.dvc("exp", "run", "-S", setting, timeout=300)
        runs[setting].params = yaml.safe_load((project.root / "params.yaml").read_text())
        runs[setting].after = _tree_hashes(project, "models", "data", "metrics")
        runs[setting].after["HEAD:params.yaml"] = project.git("show", "HEAD:params.yaml", check=True).stdout
        project.git("checkout", "--", "params.yaml", check=True)  # the workspace keeps the value tried (as DVC does)
    return project, before, runs


@pytest.mark.dvc
@pytest.mark.parametrize("setting", ["train.method=nonsense", "loss.dis_weight=abc"])
def test_a_bad_exp_run_value_stops_at_check_and_loses_no_output(dvc_bad_exp, setting):
    """Issue 36 (2): DVC removed train@<task>'s outputs before the stage refused the value. The stage check,
    first in the DAG, now refuses it before DVC touches any other stage; its own stamp persists."""
    project, before, runs = dvc_bad_exp
    proc = runs[setting]
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert RUNNING.findall(output) == ["check"]
    key = setting.split("=")[0]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "DVC removed" not in errors[0], proc.stderr
    # every output under models/, data/ and metrics/, byte for byte, and the committed params.yaml
    assert proc.after == before
    section, leaf = key.split(".")
    assert str(proc.params[section][leaf]) == setting.split("=")[1]  # the workspace's: the value tried, as DVC leaves it


@pytest.fixture(scope="module")
def dvc_one_task(dvc_bad_exp):
    """The chain shrunk to its first task, by `dvc repro` after editing params.yaml."""
    project, before, _ = dvc_bad_exp
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["tasks"] = {"shape": {"prev": "e0"}}
    zero_shot = _read(project, "metrics/zero_shot.json")
    project.write_params(params)
    proc = project.dvc("repro", check=True)
    return project, proc, before, zero_shot


@pytest.mark.dvc
def test_a_new_task_chain_reuses_e0_and_removes_the_stale_tasks(dvc_one_task):
    """Issue 36 (8): E0's pretraining read the tasks, so a new chain pretrained it again; (5) the outputs of
    the tasks that left the chain stayed; (6) a one-task chain wrote NaN into metrics JSON."""
    project, proc, before, zero_shot = dvc_one_task
    output = proc.stdout + proc.stderr
    ran = RUNNING.findall(output)
    assert "pretrain" not in ran and "zero_shot" in ran and "train@shape" in ran
    assert _sha(project.root / "models/e0/model.safetensors") == before["models/e0/model.safetensors"]
    assert {k: v for k, v in _tree_hashes(project, "models/e0").items()} == \
        {k: v for k, v in before.items() if k.startswith("models/e0/")}
    new_zero_shot = _read(project, "metrics/zero_shot.json")
    assert new_zero_shot["tasks"] == {"shape": zero_shot["tasks"]["shape"]}  # the same E0, evaluated again
    for task in ("colour", "fill"):
        for rel in (f"models/{task}", f"metrics/tasks/{task}.json", f"metrics/cost/{task}.json", f"metrics/train/{task}"):
            assert not (project.root / rel).exists(), rel
    [line] = [l for l in output.splitlines() if l.startswith("removed the outputs of tasks no longer in the chain")]
    assert "colour (" in line and "fill (" in line and "models/fill" in line
    for rel in ("metrics/cl.json", "metrics/zero_shot.json"):  # Transfer is undefined with one task: null
        text = (project.root / rel).read_text()
        data = json.loads(text, parse_constant=lambda c: pytest.fail(f"{rel}: {c} is not JSON"))
        assert data["transfer"] is None
    assert project.dvc("status", "--quiet").returncode == 0  # evaluate's record holds the pruned rows


# --- (3) stage command-line errors --------------------------------------------------------------------------


def test_train_unknown_task_is_named(micro_params, tmp_path, monkeypatch, capsys):
    """In-process (the stage's own main()): the task is named in one line before anything is read or written."""
    from pipeline.stages import train

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(micro_params))
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    with pytest.raises(SystemExit) as info:
        train.main(["nope"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err == "error: tasks.nope: no such task in params.yaml\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "params.yaml"]


def test_prepare_tolerates_a_stray_file_under_data_tasks(project_copy):
    stray = project_copy.root / "data" / "tasks" / ".DS_Store"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"\0")
    proc = project_copy.stage("prepare")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_default_benchmark_through_every_continual_stage(tmp_path, monkeypatch):
    """The default `domains` benchmark (real digits included) through prepare -> pretrain -> prototypes ->
    train@<task> -> evaluate, on micro sizes; in-process (each stage's main()), sparing six interpreter
    start-ups: the micro runs above run the stages as processes."""
    params = make_micro_params()
    params["data"]["benchmark"] = "domains"
    params["tasks"] = {"digits": {"prev": "e0"}, "shapes": {"prev": "digits"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "images").mkdir()
    for stage, *argv in (("prepare",), ("pretrain",), ("zero_shot",), ("prototypes",), ("train", "digits"), ("train", "shapes"),
                         ("evaluate",)):
        run_in(tmp_path, monkeypatch, f"pipeline.stages.{stage}", *argv)
    matrix = json.loads(Path("metrics/accuracy_matrix.json").read_text())
    assert matrix["columns"] == ["digits", "shapes"] and len(matrix["matrix"]) == 3
    zero_shot = json.loads(Path("metrics/zero_shot.json").read_text())["tasks"]
    assert {t: zero_shot[t]["chance"] for t in ("digits", "shapes")} == {"digits": 10.0, "shapes": 20.0}
    corpus = json.loads(Path("data/corpus/captions.json").read_text())
    assert len(corpus) == params["data"]["corpus_size"]
