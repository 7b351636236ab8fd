"""Errors of input apart from bugs (pipeline/errors.py, stages/common.stage)."""
from __future__ import annotations

import pytest

from pipeline import io
from pipeline.params import ParamsError
from pipeline.errors import InputError, MissingInput
from pipeline.stages.common import stage


@pytest.fixture(autouse=True)
def _outside_dvc(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)


def _main(exc: BaseException):
    @stage
    def main(argv):
        raise exc

    return main


@pytest.mark.parametrize("exc", [InputError("data/x.png: cannot read image"), ParamsError("params.yaml: train.lr: bad"),
                                 MissingInput("models/e0/model.json: not found (has its stage run?)")])
def test_input_error_is_one_line_and_exit_2(exc, capsys):
    with pytest.raises(SystemExit) as info:
        _main(exc)([])
    assert info.value.code == 2
    assert capsys.readouterr().err == f"error: {exc}\n"


def test_under_dvc_the_line_says_how_to_restore_the_outputs(monkeypatch, capsys):
    """DVC deletes a stage's outputs before it runs: the one line names the stage and the restore command."""
    monkeypatch.setenv("DVC_STAGE", "train@shape")
    with pytest.raises(SystemExit) as info:
        _main(InputError("data/x.png: cannot read image"))([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: data/x.png: cannot read image [DVC removed train@shape's outputs")
    assert "`git checkout -- metrics && dvc checkout`" in err


def test_under_dvc_a_bug_shows_its_traceback_then_the_restore_line(monkeypatch, capsys):
    monkeypatch.setenv("DVC_STAGE", "evaluate")
    with pytest.raises(SystemExit) as info:
        _main(KeyError("features"))([])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert "Traceback" in err and "KeyError: 'features'" in err
    assert err.splitlines()[-1].startswith("error: stage failed [DVC removed evaluate's outputs")


@pytest.mark.parametrize("exc", [ValueError("shapes (3, 4) and (5,) do not broadcast"), KeyError("features"),
                                 RuntimeError("mat1 and mat2 shapes cannot be multiplied")])
def test_a_bug_keeps_its_traceback(exc):
    """A ValueError that is not an input error (a shape check in a loss) is a bug: it propagates."""
    with pytest.raises(type(exc)) as info:
        _main(exc)([])
    assert info.value is exc


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    with pytest.raises(SystemExit) as info:
        _main(KeyboardInterrupt())([])
    assert info.value.code == 130 and capsys.readouterr().err == "\ninterrupted\n"


def test_input_errors_are_still_the_builtin_types(tmp_path):
    """Callers that catch ValueError / FileNotFoundError keep working."""
    with pytest.raises(FileNotFoundError):
        io.read_json(tmp_path / "nothing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        io.read_json(tmp_path / "bad.json")
    with pytest.raises(InputError):
        io.load_tensors(tmp_path / "bad.json")
    assert issubclass(ParamsError, InputError)


def test_cuda_without_a_gpu_is_an_input_error():
    import torch

    from pipeline import runtime

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="runtime.device: 'cuda'"):
        runtime.setup(0, device="cuda", threads=1)


def test_outputs_get_the_mode_open_would_give_them(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the output must follow the umask like any file."""
    import os

    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        os.umask(0o002)
        io.write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o664


@pytest.mark.parametrize("meta", [{}, {"arch": "synth-rn-tiny"}, {"arch": "nope", "image_size": 32}, []])
def test_a_clip_model_json_without_its_keys_is_named(tmp_path, meta):
    from pipeline.models import clip as clip_lib

    io.write_json(tmp_path / "model.json", meta)
    with pytest.raises(InputError, match=f"{tmp_path / 'model.json'}: "):
        clip_lib.load(tmp_path)


@pytest.mark.parametrize("meta", [{}, {"kind": "cnn"}, {"kind": "student", "classes": ["a"]}])
def test_a_classifier_model_json_without_its_keys_is_named(tmp_path, meta):
    from pipeline.models import classifier

    io.write_json(tmp_path / "model.json", meta)
    with pytest.raises(InputError, match=f"{tmp_path / 'model.json'}: "):
        classifier.load(tmp_path)


def test_a_pretrained_file_that_does_not_load_is_named(tmp_path):
    from pipeline.models import clip as clip_lib

    (tmp_path / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=r"model.pretrained: could not load .*weights.pt.* for 'synth-rn-tiny'"):
        clip_lib.build("synth-rn-tiny", 32, pretrained=str(tmp_path / "weights.pt"))


def test_a_teacher_that_cannot_take_the_image_size_is_named_before_training():
    import torch

    from pipeline.models import classifier

    vit = classifier.build_cnn("vit_tiny_patch16_224", 3)
    with pytest.raises(InputError, match=r"teacher.arch: 'vit_tiny_patch16_224' cannot take 32x32 images"):
        classifier.check_image_size(vit, "vit_tiny_patch16_224", 32)
    cnn = classifier.build_cnn("resnet18", 3).train()
    before = {k: v.clone() for k, v in cnn.state_dict().items()}
    classifier.check_image_size(cnn, "resnet18", 32)  # fits: changes nothing, not even BatchNorm statistics
    assert cnn.training and all(torch.equal(before[k], v) for k, v in cnn.state_dict().items())


def test_a_stage_ends_when_its_parent_is_killed(tmp_path):
    """`kill -9` of dvc must not leave its stage training outside DVC's lock (Linux: PR_SET_PDEATHSIG)."""
    import os
    import subprocess
    import sys
    import time

    from conftest import REPO

    if sys.platform != "linux":
        pytest.skip("parent-death signal is Linux only")
    ready = tmp_path / "ready"  # written inside main(), after the stage wrapper asked for the parent-death signal
    child = ("import time; from pipeline.stages.common import stage\n"
             f"@stage\ndef main(argv):\n    open({str(ready)!r}, 'w').write('1')\n    time.sleep(60)\nmain([])\n")
    parent = (f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {child!r}], cwd={str(REPO)!r}); "
              f"open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid)); p.wait()")
    proc = subprocess.Popen([sys.executable, "-c", parent], cwd=REPO)
    pid_file = tmp_path / "pid"
    for _ in range(600):  # imports take seconds, more on a busy machine: wait for main(), not a fixed time
        if ready.is_file() and pid_file.is_file() and pid_file.read_text():
            break
        time.sleep(0.1)
    pid = int(pid_file.read_text())
    os.kill(pid, 0)  # alive while its parent is
    proc.kill()
    proc.wait()
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail("the stage outlived its killed parent")


def test_a_failed_stage_keeps_its_previous_loss_curves(tmp_path):
    """DVCLive empties its folder on start; `live` logs beside it and swaps only on success."""
    from pipeline.stages.common import live

    curves = tmp_path / "metrics" / "train" / "task"
    with live(curves) as logger:
        for step in range(3):
            logger.log_metric("loss/total", 1.0 / (step + 1))
            logger.next_step()
    first = {p.relative_to(curves): p.read_bytes() for p in curves.rglob("*") if p.is_file()}
    assert any(p.suffix == ".tsv" for p in first)

    with pytest.raises(RuntimeError, match="killed mid-training"):
        with live(curves) as logger:
            logger.log_metric("loss/total", 9.0)
            logger.next_step()
            raise RuntimeError("killed mid-training")
    assert {p.relative_to(curves): p.read_bytes() for p in curves.rglob("*") if p.is_file()} == first

    with live(curves) as logger:
        logger.log_metric("loss/total", 5.0)
        logger.next_step()
    assert {p.relative_to(curves): p.read_bytes() for p in curves.rglob("*") if p.is_file()} != first
    assert sorted(p.name for p in curves.parent.iterdir()) == ["task"]  # no staging folder left


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    target = tmp_path / "models" / "task"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as folder:
            (folder / "new.txt").write_text("half")
            raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with io.atomic_dir(target) as folder:
        io.write_json(folder / "new.json", {"a": 1})
    assert [p.name for p in target.iterdir()] == ["new.json"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["task"]
