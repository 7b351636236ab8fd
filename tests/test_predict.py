"""`python -m pipeline.tools.predict`: top classes with probabilities, clear errors."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from pipeline.tools import predict
from pipeline.data import load_task
from tests.test_methods import workspace  # noqa: F401  (module fixture: micro tasks, E0 and a 'shape' model)


def write_png(path, image_chw) -> str:
    Image.fromarray(np.ascontiguousarray(image_chw.numpy().transpose(1, 2, 0))).save(path)
    return str(path)


def test_prints_top_classes_with_probabilities(workspace, monkeypatch, tmp_path, capsys):  # noqa: F811
    root, _ = workspace
    monkeypatch.chdir(root)
    task = load_task(root / "data/tasks/shape")
    files = [write_png(tmp_path / f"img{i}.png", task.test_images[i]) for i in range(2)]
    predict.main(["--task", "shape", "--model", "shape", "--top", "3", *files])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, file in zip(lines, files):
        assert line.startswith(file + ": ")
        pairs = re.findall(r"(\w+) (\d\.\d{3})", line.split(": ", 1)[1])
        assert len(pairs) == 3 and all(name in task.classes for name, _ in pairs)
        probs = [float(p) for _, p in pairs]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.001


def test_matches_evaluation_probabilities(workspace, monkeypatch):  # noqa: F811
    """The CLI's probabilities are the ones evaluation uses (same features, prompts and scale)."""
    from pipeline.evaluation import probabilities
    from pipeline.models import clip as clip_lib

    root, _ = workspace
    monkeypatch.chdir(root)
    task = load_task(root / "data/tasks/shape")
    clip = clip_lib.load(root / "models/shape")
    ours = predict.predict(clip, task.classes, task.templates, task.test_images[:4])
    theirs = probabilities(clip, task.prompts(), task.test_images[:4], batch_size=2)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--task", "nope"], "error: --task: 'nope' is not a task of params.yaml"),
    (["--task", "shape"], "missing.png"),
    ([], "error: --task: which task's classes to choose from? one of shape"),
    (["--task", "shape", "--top", "-1"], "--top: must be >= 1, got -1"),
])
def test_errors_name_the_problem(workspace, monkeypatch, tmp_path, capsys, args, message):  # noqa: F811
    root, _ = workspace
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as exit_info:
        predict.main([*args, "--model", "shape", str(tmp_path / "missing.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
