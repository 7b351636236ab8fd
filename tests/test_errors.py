"""Errors of input apart from bugs (pipeline/errors.py, stages/common.stage)."""
from __future__ import annotations

import pytest

from pipeline import io
from pipeline.config import ParamsError
from pipeline.errors import InputError, MissingInput
from pipeline.stages.common import stage


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


def test_input_error_shows_its_traceback_with_pipeline_debug(monkeypatch):
    monkeypatch.setenv("PIPELINE_DEBUG", "1")
    with pytest.raises(InputError, match="cannot read"):
        _main(InputError("cannot read"))([])


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
    from pipeline.config import RuntimeParams

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(InputError, match="runtime.device: 'cuda'"):
        runtime.setup(RuntimeParams(device="cuda", threads=1), 0)


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
