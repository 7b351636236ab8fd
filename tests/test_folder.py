"""Tests of the folder benchmark's pretraining set: E0's caption corpus comes from <root>/pretrain/ (class
folders or captions.tsv), the tasks' training images only through the opt-in data.pretrain_on_tasks, and
every misconfiguration fails at params load with one line naming the folder or key."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import rejected_params
from pipeline.params import Params, ParamsError
from pipeline.data import load_corpus, save_corpus
from pipeline.data.folder import build_folder_corpus
from pipeline.data.benchmarks import build_corpus

TEMPLATES = ["a photo of a {}.", "a {}."]
SIZE = 16
TASKS = {"fruit": {"prev": "e0"}, "veg": {"prev": "fruit"}}
# Every image is one solid colour, so a corpus image tells where it came from by its top-left pixel.
TASK_COLOURS = {"fruit": {"apple": (200, 0, 0), "pear": (0, 200, 0)},
                "veg": {"kale": (0, 90, 0), "leek": (90, 90, 0)}}
BLUE, WHITE, BLACK = (0, 0, 230), (250, 250, 250), (5, 5, 5)


def _png(path: Path, rgb: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), rgb).save(path)
    return path


@pytest.fixture
def root(tmp_path) -> Path:
    """Two tasks of two classes each: 2 training and 1 test image per class; no pretraining set."""
    for task, classes in TASK_COLOURS.items():
        for cls, rgb in classes.items():
            for i in range(2):
                _png(tmp_path / task / "train" / cls / f"{i}.png", rgb)
            _png(tmp_path / task / "test" / cls / "0.png", rgb)
    return tmp_path


def _class_folders(root: Path) -> None:
    """pretrain/: 'blue-cube' with 2 images, 'red_ball' with 3."""
    for i in range(2):
        _png(root / "pretrain" / "blue-cube" / f"{i}.png", BLUE)
    for i in range(3):
        _png(root / "pretrain" / "red_ball" / f"{i}.jpg", (230, 0, 0))


def _caption_list(root: Path, lines: list[str]) -> Path:
    path = root / "pretrain" / "captions.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _raw(micro_params: dict, root: Path, pretrained: str | None = None, method: str = "dual_teacher",
         **data) -> dict:
    raw = copy.deepcopy(micro_params)
    raw["data"].update(benchmark="folder", root=str(root), image_size=SIZE, templates=TEMPLATES, **data)
    raw["model"]["pretrained"] = pretrained
    raw["train"]["method"] = method
    raw["tasks"] = copy.deepcopy(TASKS)
    raw["target"].update(benchmark="folder", task="fruit")
    return raw


def _corpus(micro_params, root, **kw):
    params = Params.from_dict(_raw(micro_params, root, **kw))
    return build_corpus(params.data, params.task_names)


def _colours(images: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(x[:, 0, 0].tolist()) for x in images]


def _task_colours() -> set[tuple[int, ...]]:
    return {rgb for classes in TASK_COLOURS.values() for rgb in classes.values()}


# --- the two layouts ----------------------------------------------------------------------------------------


def test_class_folder_pretrain_set(micro_params, root):
    _class_folders(root)
    corpus = _corpus(micro_params, root)
    assert corpus.images.shape == (5, 3, SIZE, SIZE) and corpus.images.dtype == torch.uint8
    # Sorted class folders, '_'/'-' -> space, templates round-robin per class, as for the tasks' images.
    assert corpus.captions == ["a photo of a blue cube.", "a blue cube.",
                               "a photo of a red ball.", "a red ball.", "a photo of a red ball."]
    assert _colours(corpus.images) == [BLUE] * 2 + [(230, 0, 0)] * 3
    assert not set(_colours(corpus.images)) & _task_colours(), "E0's corpus must not hold task images"

    capped = _corpus(micro_params, root, corpus_per_class=1)
    assert capped.captions == ["a photo of a blue cube.", "a photo of a red ball."]
    assert len(capped.images) == 2

    (root / "pretrain" / "classnames.txt").write_text("red_ball: shiny red ball\n")
    assert _corpus(micro_params, root).captions[-1] == "a photo of a shiny red ball."


def test_caption_list_pretrain_set(micro_params, root):
    _png(root / "pretrain" / "imgs" / "a.png", WHITE)
    _png(root / "pretrain" / "imgs" / "deep" / "b.png", BLUE)
    _png(root / "pretrain" / "top.png", BLACK)
    _caption_list(root, ["# image<TAB>caption", "imgs/a.png\ta white square", "",
                         "imgs/deep/b.png\tsomething blue\twith a tab", "top.png\t  a black tile  ",
                         "imgs/a.png\tthe same white square, second caption"])
    corpus = _corpus(micro_params, root, corpus_per_class=1)  # no classes: the list is used whole
    assert corpus.captions == ["a white square", "something blue\twith a tab", "a black tile",
                               "the same white square, second caption"]
    assert _colours(corpus.images) == [WHITE, BLUE, BLACK, WHITE]


# --- without a pretraining set ------------------------------------------------------------------------------


def test_no_pretrain_set_and_no_opt_in_fails_at_load(micro_params, root):
    message = rejected_params(_raw(micro_params, root))
    assert str(root / "pretrain") in message and "data.pretrain_on_tasks" in message
    assert "model.pretrained: null" in message

    # A pretrained E0 needs no corpus ... unless the method draws reference pairs from it (ZSCL's oracle form;
    # as published, ZSCL reads the generated reference set instead).
    oracle = _raw(micro_params, root, pretrained="e0.bin", method="zscl")
    oracle["loss"]["zscl_reference"] = "corpus_oracle"
    message = rejected_params(oracle)
    assert "train.method: zscl" in message and str(root / "pretrain") in message
    Params.from_dict(_raw(micro_params, root, pretrained="e0.bin", method="zscl"))


def test_no_corpus_source_when_nothing_reads_it(micro_params, root, tmp_path):
    corpus = _corpus(micro_params, root, pretrained="e0.bin", method="finetune")
    assert corpus.images.shape == (0, 3, SIZE, SIZE) and corpus.captions == []
    save_corpus(corpus, tmp_path / "corpus")  # data/corpus still exists for DVC
    assert load_corpus(tmp_path / "corpus").captions == []
    # A reader of a stale empty corpus (pretraining set added after prepare) gets one clear line.
    with pytest.raises(ValueError, match=r"corpus is empty, but train.method: zscl needs"):
        load_corpus(tmp_path / "corpus", needed_by="train.method: zscl")


def test_opt_in_pretrains_on_the_tasks_training_images(micro_params, root):
    corpus = _corpus(micro_params, root, pretrain_on_tasks=True)
    before = build_folder_corpus(root, ["fruit", "veg"], image_size=SIZE, templates=TEMPLATES, per_class=None)
    assert corpus.captions == before.captions and torch.equal(corpus.images[:], before.images[:])
    assert corpus.captions == ["a photo of a apple.", "a apple.", "a photo of a pear.", "a pear.",
                               "a photo of a kale.", "a kale.", "a photo of a leek.", "a leek."]
    assert set(_colours(corpus.images)) == _task_colours()

    _class_folders(root)  # with a pretraining set too: that set first, then the tasks' training images
    both = _corpus(micro_params, root, pretrain_on_tasks=True)
    assert len(both.images) == 5 + 8
    assert both.captions[:5] == _corpus(micro_params, root).captions and both.captions[5:] == before.captions


# --- what is rejected ---------------------------------------------------------------------------------------


def test_both_layoutsrejected_params(micro_params, root):
    _class_folders(root)
    _png(root / "pretrain" / "top.png", BLACK)
    _caption_list(root, ["top.png\ta black tile"])
    message = rejected_params(_raw(micro_params, root))
    assert str(root / "pretrain") in message and "both" in message
    assert "blue-cube" in message and "red_ball" in message


def test_task_named_pretrainrejected_params(micro_params, root):
    for split in ("train", "test"):
        _png(root / "pretrain" / split / "apple" / "0.png", (200, 0, 0))
    raw = _raw(micro_params, root, pretrain_on_tasks=True)
    raw["tasks"] = {"pretrain": {"prev": "e0"}}
    message = rejected_params(raw)
    assert "tasks.pretrain" in message and "reserved" in message

    raw = _raw(micro_params, root, pretrain_on_tasks=True)
    raw["target"]["task"] = "pretrain"
    message = rejected_params(raw)
    assert "target.task" in message and "reserved" in message


@pytest.mark.parametrize("lines, expected", [
    (["no-tab-here"], r"captions.tsv:1: expected 'relative/image/path<TAB>caption'"),
    (["# only a comment", "a.png\t"], r"captions.tsv:2: expected"),
    (["../fruit/train/apple/0.png\tescapes"], r"captions.tsv:1: image path '../fruit/train/apple/0.png' must be relative"),
    (["/etc/x.png\tabsolute"], r"captions.tsv:1: image path '/etc/x.png' must be relative"),
    (["# nothing"], r"captions.tsv: no image-caption pairs"),
], ids=["no-tab", "no-caption", "dotdot", "absolute", "empty"])
def test_bad_caption_list_fails_at_load(micro_params, root, lines, expected):
    path = _caption_list(root, lines)
    message = rejected_params(_raw(micro_params, root))
    assert re.search(expected, message) and str(path) in message


def test_empty_pretrain_folder_and_embedded_opt_inrejected_params(micro_params, root):
    (root / "pretrain").mkdir()
    message = rejected_params(_raw(micro_params, root))
    assert str(root / "pretrain") in message and "neither" in message
    assert "data.pretrain_on_tasks" in rejected_params({**micro_params, "data": {**micro_params["data"], "pretrain_on_tasks": True}})


def test_unreadable_pretrain_images_name_their_path(micro_params, root):
    _class_folders(root)
    bad = root / "pretrain" / "red_ball" / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        _corpus(micro_params, root)
    shutil.rmtree(root / "pretrain")

    _png(root / "pretrain" / "ok.png", WHITE)
    (root / "pretrain" / "broken.png").write_bytes(b"not an image")
    _caption_list(root, ["ok.png\tfine", "missing.png\tgone", "broken.png\tbad"])
    with pytest.raises(ValueError, match=re.escape(str(root / "pretrain" / "missing.png"))):
        _corpus(micro_params, root)


# --- through the prepare stage ------------------------------------------------------------------------------


def test_prepare_stage_writes_the_pretraining_set(project_copy, micro_params, root):
    project_copy.write_params(_raw(micro_params, root))
    proc = project_copy.stage("prepare")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(root / "pretrain") in lines[0], proc.stderr
    assert not (project_copy.root / "data").exists()

    _class_folders(root)
    project_copy.stage("prepare").check_returncode()
    captions = json.loads((project_copy.root / "data" / "corpus" / "captions.json").read_text())
    assert captions == ["a photo of a blue cube.", "a blue cube.",
                        "a photo of a red ball.", "a red ball.", "a photo of a red ball."]
    assert sorted(p.name for p in (project_copy.root / "data" / "tasks").iterdir()) == ["fruit", "veg"]


@pytest.mark.parametrize("bits", [16, 32])
def test_deep_greyscale_images_keep_their_range(tmp_path, bits):
    """PIL's convert("RGB") clips 16-bit greyscale at 255 (a gradient turns almost all white); the loader
    scales by the type's range instead: a 0..65535 ramp becomes a 0..255 ramp."""
    import numpy as np

    from pipeline.data.images import load_image

    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1))
    image = Image.fromarray(ramp.astype(np.uint16)) if bits == 16 else Image.fromarray(ramp.astype(np.int32), mode="I")
    path = tmp_path / ("ramp.png" if bits == 16 else "ramp.tiff")  # PNG has no 32-bit greyscale
    image.save(path)
    loaded = load_image(path, 32)
    assert loaded.shape == (3, 32, 32) and (loaded[0] == loaded[1]).all() and (loaded[0] == loaded[2]).all()
    row = loaded[0, 16].astype(int)
    assert row[0] <= 8 and row[-1] >= 247 and (np.diff(row) >= 0).all()  # still a ramp, not clipped white
    assert (loaded == 255).mean() < 0.05


def test_float_images_are_refused_naming_the_file(tmp_path):
    import numpy as np

    from pipeline.data.images import load_image

    Image.fromarray(np.zeros((8, 8), dtype=np.float32), mode="F").save(tmp_path / "float.tiff")
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / "float.tiff")) + ".*float"):
        load_image(tmp_path / "float.tiff", 8)


# --- the pre-check `make repro` runs before DVC touches an output -------------------------------------------


def test_pipeline_check_reads_every_image_header_first(micro_params, root, tmp_path, monkeypatch, capsys):
    from pipeline.tools import check

    _class_folders(root)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(json.dumps(_raw(micro_params, root)))  # JSON is YAML
    monkeypatch.setenv("PIPELINE_PARAMS", str(params_file))
    check.main([])
    # fruit and veg: 2 classes x (2 train + 1 test) each, and pretrain/'s 5
    assert "17 images under" in capsys.readouterr().out

    bad = root / "veg" / "test" / "leek" / "0.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated: the header opens, the chunks do not
    with pytest.raises(SystemExit) as info:
        check.main([])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and str(bad) in err and "cannot read image" in err
