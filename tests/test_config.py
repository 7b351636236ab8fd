"""Tests of pipeline.params: the committed params validate, and every kind of bad value is rejected before any
compute with a message that names the key (in-process and through a stage's command line)."""
from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from conftest import REPO, rejected_params
from pipeline.params import Params, ParamsError

COMMITTED_ORDER = ["aircraft", "shapes", "textures", "landuse", "flowers", "digits"]


def _with(params: dict, dotted: str, value) -> dict:
    """A deep copy of `params` with `dotted` (e.g. "loss.dis_weight") set to `value`."""
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


# --- what is accepted ---------------------------------------------------------------------------------------


def test_committed_params_validate():
    params = Params.load(REPO / "params.yaml")
    assert params.task_names == COMMITTED_ORDER
    assert params.data.benchmark == "domains"
    assert (params.target.benchmark, params.target.task) == ("facets", "count+colour")
    assert params.train.method == "dual_teacher"
    # The loss section is where `dvc exp run -S loss.dis_weight=...` edits: it must exist with these names.
    assert {"ce_weight", "con_weight", "dis_weight", "tau", "gamma"} <= set(params.loss.model_dump())


def test_micro_params_validate(micro_params):
    params = Params.from_dict(micro_params)
    assert params.task_names == ["shape", "colour", "fill"]
    assert (params.train.steps, params.data.corpus_size) == (3, 256)


def test_task_names_follow_the_chain_not_the_file_order(micro_params):
    raw = _with(micro_params, "tasks", {"fill": {"prev": "colour"}, "shape": {"prev": "e0"}, "colour": {"prev": "shape"}})
    assert Params.from_dict(raw).task_names == ["shape", "colour", "fill"]


def test_int_accepted_for_float(micro_params):
    # `dvc exp run -S loss.dis_weight=0` writes an int into params.yaml.
    assert Params.from_dict(_with(micro_params, "loss.dis_weight", 0)).loss.dis_weight == 0


def test_params_are_frozen(micro_params):
    params = Params.from_dict(micro_params)
    with pytest.raises(ValidationError):
        params.train.steps = 10
    with pytest.raises(ValidationError):
        params.loss = params.loss
    assert params.train.steps == 3


# --- what is rejected, and the message names the key --------------------------------------------------------


def test_unknown_top_level_key(micro_params):
    message = rejected_params({**micro_params, "trian": {"steps": 3}})
    assert "trian" in message and "unknown key" in message


def test_unknown_nested_key(micro_params):
    raw = copy.deepcopy(micro_params)
    raw["loss"]["dis_wieght"] = 0.1
    message = rejected_params(raw)
    assert "loss.dis_wieght" in message and "unknown key" in message


def test_wrong_type(micro_params):
    message = rejected_params(_with(micro_params, "train.steps", "ten"))
    assert "train.steps" in message


def test_float_rejected_for_int(micro_params):
    assert "train.steps" in rejected_params(_with(micro_params, "train.steps", 2.5))


def test_negative_weight(micro_params):
    message = rejected_params(_with(micro_params, "loss.dis_weight", -0.1))
    assert "loss.dis_weight" in message


def test_unknown_method(micro_params):
    message = rejected_params(_with(micro_params, "train.method", "nope"))
    assert "train.method" in message and "nope" in message
    assert "dual_teacher" in message  # lists the known ones


def test_unknown_arch(micro_params):
    message = rejected_params(_with(micro_params, "model.arch", "nope"))
    assert message == "params: model.arch: unknown open_clip architecture 'nope'"
    message = rejected_params(_with(micro_params, "teacher.arch", "nope"))
    assert message == "params: teacher.arch: unknown CNN 'nope' (neither a timm nor a torchvision classifier name)"


def test_library_names_are_checked_only_for_the_libraries_asked(micro_params):
    """A stage checks the names of the libraries it imports anyway (their import costs seconds)."""
    raw = _with(_with(micro_params, "model.arch", "nope"), "teacher.arch", "nope")
    assert Params.from_dict(raw, libraries=()).model.arch == "nope"
    with pytest.raises(ParamsError, match="model.arch"):
        Params.from_dict(raw, libraries=("open_clip",))
    with pytest.raises(ParamsError, match="teacher.arch"):
        Params.from_dict(_with(micro_params, "teacher.arch", "nope"), libraries=("timm",))
    with pytest.raises(TypeError, match="torchvision"):
        Params.from_dict(micro_params, libraries=("torchvision",))


def test_params_load_imports_no_method_and_no_model_library():
    """Start-up: validating params.yaml (as evaluate, prepare or target do) imports neither the methods nor
    open_clip, timm or torchvision; config and the method registry do not import each other's heavy side."""
    code = ("import sys; from pipeline.stages.common import load_params; load_params(); "
            "print(sorted(m for m in ('open_clip', 'timm', 'torchvision', 'pipeline.continual.base', "
            "'pipeline.continual.dual_teacher', 'pipeline.models.clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unknown_facet_task(micro_params):
    raw = _with(micro_params, "tasks", {"shape": {"prev": "e0"}, "texture": {"prev": "shape"}})
    message = rejected_params(raw)
    assert "tasks.texture" in message


def test_unknown_domain_task(micro_params):
    raw = _with(_with(micro_params, "data.benchmark", "domains"), "tasks", {"shapes": {"prev": "e0"}, "shape": {"prev": "shapes"}})
    message = rejected_params(raw)
    assert "tasks.shape" in message and "domains benchmark" in message and "aircraft" in message


def test_target_has_its_own_benchmark(micro_params):
    raw = _with(micro_params, "target", {**micro_params["target"], "benchmark": "domains", "task": "flowers"})
    assert Params.from_dict(raw).target.task == "flowers"
    message = rejected_params(_with(micro_params, "target", {**micro_params["target"], "benchmark": "domains"}))
    assert "target.task" in message and "count+colour" in message
    message = rejected_params(_with(micro_params, "target", {**micro_params["target"], "benchmark": "folder"}))
    assert "target.task" in message and "data.root" in message and "images" in message


@pytest.mark.parametrize(
    "tasks, names",
    [
        pytest.param({"shape": {"prev": "e0"}, "fill": {"prev": "colour"}}, ["fill", "colour"], id="gap"),
        pytest.param(
            {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}, "fill": {"prev": "shape"}}, ["colour", "fill", "shape"], id="fork"
        ),
        pytest.param({"shape": {"prev": "e0"}, "colour": {"prev": "fill"}, "fill": {"prev": "colour"}}, ["cycle"], id="cycle"),
        pytest.param({"shape": {"prev": "colour"}, "colour": {"prev": "shape"}}, ["e0"], id="no-first-task"),
        pytest.param({"e0": {"prev": "e0"}}, ["e0"], id="task-named-e0"),
        pytest.param({}, ["task"], id="empty"),
    ],
)
def test_broken_chain(micro_params, tasks, names):
    message = rejected_params(_with(micro_params, "tasks", tasks))
    assert message.startswith("params: tasks"), message  # names the section (then the task and its prev)
    for name in names:
        assert name in message


def test_task_without_prev(micro_params):
    message = rejected_params(_with(micro_params, "tasks", {"shape": {}}))
    assert "tasks.shape.prev" in message and "missing" in message


def test_folder_benchmark_needs_existing_root(micro_params, tmp_path):
    missing = tmp_path / "no-such-folder"
    raw = _with(micro_params, "data", {**micro_params["data"], "benchmark": "folder", "root": str(missing)})
    message = rejected_params(raw)
    assert "data.root" in message and str(missing) in message


def test_folder_benchmark_default_root_has_no_tasks(micro_params):
    """The default data.root, images/, holds only its README: the first task's folder is named."""
    message = rejected_params(_with(micro_params, "data.benchmark", "folder"))
    assert "tasks.shape" in message and "images/shape/train" in message and "data.root" in message


def test_root_must_exist_for_every_benchmark(micro_params, tmp_path):
    """data.root is a dependency of prepare and target in dvc.yaml, read or not: DVC fails on a missing one."""
    missing = str(tmp_path / "gone")
    message = rejected_params(_with(micro_params, "data", {**micro_params["data"], "root": missing}))
    assert message.startswith("params: data") and "data.root" in message and missing in message


def test_folder_benchmark_missing_task_folder(micro_params, tmp_path):
    (tmp_path / "shape" / "train").mkdir(parents=True)  # no test split, no other tasks
    raw = _with(micro_params, "data", {**micro_params["data"], "benchmark": "folder", "root": str(tmp_path)})
    message = rejected_params(raw)
    assert "tasks.shape" in message and str(tmp_path / "shape" / "test") in message


def test_load_names_the_file(tmp_path):
    missing = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match="params.yaml: file not found"):
        Params.load(missing)
    missing.write_text("data: [unclosed\n")
    with pytest.raises(ParamsError, match="params.yaml: not valid YAML"):
        Params.load(missing)


def test_floats_are_read_as_dvc_reads_them(tmp_path, micro_params):
    """YAML 1.2 (DVC, `dvc exp run -S train.lr=5e-4`): 5e-4 is a float; PyYAML's YAML 1.1 made it a string."""
    text = yaml.safe_dump(_with(micro_params, "train.lr", 0.0001)).replace("lr: 0.0001\n", "lr: 5e-4\n", 1)
    assert "lr: 5e-4" in text
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert yaml.safe_load(text)["train"]["lr"] == "5e-4"  # what plain PyYAML gives
    assert Params.load(path, libraries=()).train.lr == 5e-4


def test_load_reports_source_and_key(tmp_path, micro_params):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(micro_params, "train.steps", 0)))
    with pytest.raises(ParamsError) as info:
        Params.load(path)
    assert str(info.value).startswith(f"{path}: train.steps:")


# --- through a stage's main() -------------------------------------------------------------------------------
# In-process (the same main() a stage's command line runs, stderr and exit code included): a subprocess per
# case would re-import torch, open_clip and timm each time. test_pipeline.py runs real processes.


def run_main(main, params_text: str, tmp_path, monkeypatch, capsys, argv=()) -> tuple[int, str, str]:
    """main(argv) with params.yaml = `params_text` (via PIPELINE_PARAMS), in `tmp_path`: (exit code, out, err)."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(params_text)
    monkeypatch.setenv("PIPELINE_PARAMS", str(params_file))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir(exist_ok=True)  # data.root's default
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _yaml(params: dict) -> str:
    return yaml.safe_dump(params, sort_keys=False)


@pytest.mark.parametrize(
    "dotted, value, key",
    [("loss.dis_wieght", 0.1, "loss.dis_wieght"), ("train.steps", "ten", "train.steps")],
    ids=["unknown-key", "wrong-type"],
)
def test_stage_with_invalid_params_fails_cleanly(micro_params, tmp_path, monkeypatch, capsys, dotted, value, key):
    from pipeline.stages import prepare

    sentinel = tmp_path / "data" / "tasks" / "shape" / "task.json"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_bytes(b'{"sentinel": "from an earlier run"}\n')
    before = sentinel.read_bytes()

    code, _, err = run_main(prepare.main, _yaml(_with(micro_params, dotted, value)), tmp_path, monkeypatch, capsys)

    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert key in lines[0]
    assert sentinel.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "data").rglob("*")) == ["shape", "task.json", "tasks"]


@pytest.mark.parametrize("stage, dotted, message", [
    ("pretrain", "model.arch", "model.arch: unknown open_clip architecture 'nope'"),
    ("teacher", "teacher.arch", "teacher.arch: unknown CNN 'nope' (neither a timm nor a torchvision classifier name)"),
])
def test_stage_checks_the_names_of_the_library_it_imports(micro_params, tmp_path, monkeypatch, capsys, stage, dotted, message):
    import importlib

    main = importlib.import_module(f"pipeline.stages.{stage}").main
    code, _, err = run_main(main, _yaml(_with(micro_params, dotted, "nope")), tmp_path, monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'params.yaml'}: {message}"


@pytest.mark.parametrize("text, message", [
    ("foo: 1\n", "foo: unknown key"),
    ("", "tasks: missing key"),
    ("# nothing but a comment\n", "tasks: missing key"),
    ("cycle", "tasks: colour.prev: task is not reachable from 'e0' (a cycle?)"),
])
def test_check_names_what_dvc_would_not(micro_params, tmp_path, monkeypatch, capsys, text, message):
    """`make repro` runs `python -m pipeline.tools.check` first: a top-level key no stage reads, an empty
    params.yaml or a task-chain cycle gives one line of ours instead of DVC's own error (or none)."""
    from pipeline.tools import check

    if text == "cycle":
        text = _yaml(_with(micro_params, "tasks", {"shape": {"prev": "e0"}, "colour": {"prev": "fill"}, "fill": {"prev": "colour"}}))
    elif text.startswith("foo"):
        text = _yaml(micro_params) + text
    code, _, err = run_main(check.main, text, tmp_path, monkeypatch, capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 'params.yaml'}: {message}", err
    code, out, _ = run_main(check.main, _yaml(micro_params), tmp_path, monkeypatch, capsys)
    assert code == 0 and out.startswith("params.yaml: ok (facets benchmark, tasks shape -> ")
