"""The fashion_mnist target on a tiny idx fixture the tests write (the exact files torchvision's FashionMNIST
reads, so no data package is needed): labels against images, shapes, split sizes, the per-class draw by seed,
the missing-data line (params, `pipeline.tools.check`, the target stage), `make data-fashion-mnist`'s copy, and one
step of every registered compression and cohort method on the fixture target."""
from __future__ import annotations

import copy
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import rejected_params, run_in
from pipeline.compression.data import per_class_batches
from pipeline.compression.registry import MODULES
from pipeline.compression.run import cohort_method
from pipeline.names import SUPERVISED
from pipeline.params import Params
from pipeline.data import load_task
from pipeline.data.benchmarks import build_task
from pipeline.data.fashion_mnist import FILES, build_fashion_mnist_task, check_files, fit_images, per_class_indices
from pipeline.errors import InputError, MissingInput
from pipeline.tools.get_data import from_gz
from pipeline.models import classifier
from test_compression_methods import _context, one_step

TRAIN, TEST = 6, 3  # images a class in the fixture's splits (ten classes)
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx format (LeCun's): zero, zero, type 0x08 (uint8), the number of dimensions, each dimension as a
    big-endian int32, then the data."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def fixture_split(per_class: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels in a shuffled order; image i of class c: value 20 c + 1 everywhere but its top-left pixel, which
    holds its position (+ offset), so a label can be checked against its image and an image traced back."""
    labels = np.random.default_rng(offset).permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
    images = np.repeat((20 * labels + 1)[:, None, None], 28, 1).repeat(28, 2).astype(np.uint8)
    images[:, 0, 0] = np.arange(len(labels)) + offset
    return images, labels


def write_fixture(root: Path, gz: bool = False) -> Path:
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    for prefix, per_class, offset in (("train", TRAIN, 0), ("t10k", TEST, 100)):
        images, labels = fixture_split(per_class, offset)
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = idx_bytes(array)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("fmnist"))


@pytest.fixture(scope="module")
def fixture_task(fixture_root):
    return build_fashion_mnist_task(fixture_root, image_size=32, train_per_class=None, test_per_class=None, seed=0)


def test_the_reader_gives_every_image_with_its_label_and_the_classes(fixture_task):
    t = fixture_task
    assert t.classes == CLASSES and t.name == "fashion_mnist"
    assert t.train_images.shape == (10 * TRAIN, 3, 32, 32) and t.test_images.shape == (10 * TEST, 3, 32, 32)
    assert t.train_images.dtype == torch.uint8 and t.train_labels.dtype == torch.int64
    assert torch.bincount(t.train_labels).tolist() == [TRAIN] * 10
    assert torch.bincount(t.test_labels).tolist() == [TEST] * 10
    for images, labels, offset in ((t.train_images, t.train_labels, 0), (t.test_images, t.test_labels, 100)):
        centre = images[:, :, 2:30, 2:30]
        assert torch.equal(centre[:, :, 5, 5], (20 * labels + 1)[:, None].expand(-1, 3).to(torch.uint8))
        assert torch.equal(centre[:, 0, 0, 0], torch.arange(len(labels), dtype=torch.uint8) + offset)  # file order
        border = images.clone()
        border[:, :, 2:30, 2:30] = 0
        assert border.sum() == 0  # LeNet-5's black 2 px border, no resampling at 32 px


def test_the_expected_labels_are_the_files_own(fixture_root, fixture_task):
    _, labels = fixture_split(TRAIN, 0)
    assert fixture_task.train_labels.tolist() == labels.tolist()


@pytest.mark.parametrize("size, inner", [(16, 14), (64, 56)])
def test_other_image_sizes_keep_the_borders_share(size, inner):
    images = torch.full((2, 28, 28), 200, dtype=torch.uint8)
    out = fit_images(images, size)
    assert out.shape == (2, 3, size, size)
    pad = (size - inner) // 2
    assert out[:, :, pad:pad + inner, pad:pad + inner].min() == 200 and out[:, :, :pad].sum() == 0


def test_per_class_draws_are_reproducible_by_seed_and_balanced(fixture_root):
    a = build_fashion_mnist_task(fixture_root, image_size=32, train_per_class=2, test_per_class=1, seed=3)
    b = build_fashion_mnist_task(fixture_root, image_size=32, train_per_class=2, test_per_class=1, seed=3)
    c = build_fashion_mnist_task(fixture_root, image_size=32, train_per_class=2, test_per_class=1, seed=4)
    assert len(a.train_labels) == 20 and len(a.test_labels) == 10
    assert torch.bincount(a.train_labels).tolist() == [2] * 10
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_images, b.test_images)
    assert not torch.equal(a.train_images, c.train_images)
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert per_class_indices(labels, 5, 0, "train").tolist() == [0, 1, 2, 3, 4]  # fewer than k: all of them
    assert per_class_indices(labels, None, 0, "train").tolist() == [0, 1, 2, 3, 4]


def test_missing_data_is_one_line_naming_the_root_and_both_ways(tmp_path):
    with pytest.raises(MissingInput) as info:
        check_files(tmp_path)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "FashionMNIST" / "raw") in message
    assert "target.root" in message and "make data-fashion-mnist" in message
    assert "apt" in message and "torchvision's download" in message
    with pytest.raises(MissingInput, match="only as .gz: decompress"):
        check_files(write_fixture(tmp_path / "gz", gz=True))


def _fashion_params(micro_params: dict, root: Path, **target) -> dict:
    raw = copy.deepcopy(micro_params)
    raw["target"] = {**raw["target"], "benchmark": "fashion_mnist", "task": "fashion_mnist", "root": str(root),
                     "train_per_class": 2, "test_per_class": None, **target}
    return raw


def test_params_name_the_missing_data_set_and_the_task(micro_params, tmp_path, fixture_root):
    message = rejected_params(_fashion_params(micro_params, tmp_path))
    assert "target.root" in message and "make data-fashion-mnist" in message
    message = rejected_params(_fashion_params(micro_params, fixture_root, task="count+colour"))
    assert "target.task" in message and "fashion_mnist" in message
    message = rejected_params(_fashion_params(micro_params, tmp_path / "gone"))
    assert "target.root" in message and str(tmp_path / "gone") in message
    raw = copy.deepcopy(micro_params)
    raw["target"]["train_per_class"] = None  # every image: a data set on disk only
    assert "train_per_class" in rejected_params(raw)
    assert Params.from_dict(_fashion_params(micro_params, fixture_root)).target.test_per_class is None


def test_check_and_the_target_stage(micro_params, tmp_path, fixture_root, monkeypatch, capsys):
    (tmp_path / "images").mkdir()
    missing = tmp_path / "empty"
    missing.mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_fashion_params(micro_params, missing)))
    for module in ("pipeline.tools.check", "pipeline.stages.target"):
        with pytest.raises(SystemExit) as info:
            run_in(tmp_path, monkeypatch, module)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and "\n" not in err and "make data-fashion-mnist" in err
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_fashion_params(micro_params, fixture_root)))
    run_in(tmp_path, monkeypatch, "pipeline.tools.check")
    assert "Fashion-MNIST" in capsys.readouterr().out
    run_in(tmp_path, monkeypatch, "pipeline.stages.target")
    task = load_task(tmp_path / "data" / "target")
    assert task.classes == CLASSES and len(task.train_labels) == 20 and len(task.test_labels) == 10 * TEST
    again = build_task(Params.from_dict(_fashion_params(micro_params, fixture_root)).data, "fashion_mnist", 2, None,
                       benchmark="fashion_mnist", root=str(fixture_root))
    assert torch.equal(task.train_images, again.train_images)  # data.seed draws the same images


def test_get_data_decompresses_the_debian_files(tmp_path):
    source = write_fixture(tmp_path / "debian", gz=True) / "FashionMNIST" / "raw"
    folder = tmp_path / "root" / "FashionMNIST" / "raw"
    assert sorted(from_gz(source, folder)) == sorted(FILES)
    for name in FILES:
        assert (folder / name).read_bytes() == gzip.decompress((source / f"{name}.gz").read_bytes())
    check_files(tmp_path / "root")
    assert from_gz(source, folder) == []  # files already there are left alone


@pytest.fixture(scope="module")
def teacher10():
    torch.manual_seed(0)
    return classifier.build_cnn("resnet18", 10).eval().requires_grad_(False)


@pytest.mark.parametrize("name", sorted({*MODULES, SUPERVISED}))
def test_every_method_runs_one_step_on_the_fixture_target(name, fixture_task, teacher10):
    """On a batch of 4 classes x 2 images, as the cohort's sampler draws them (every contrastive anchor has a
    positive), for every method alike."""
    idx = next(per_class_batches(fixture_task.train_labels, 8, 1, seed=0, per_class=2))
    one_step(_context(name, teacher10, task=fixture_task), name, teacher10, idx)


def test_a_cohort_batch_needing_more_classes_than_the_target_has_is_one_line(micro_params, fixture_root, fixture_task):
    """32 at 2 a class needs 16 classes; Fashion-MNIST has 10: named before any network is built."""
    raw = _fashion_params(micro_params, fixture_root)
    raw["cohort"].update(batch_size=32, per_class=2)
    with pytest.raises(InputError, match=r"cohort.batch_size: 32 at cohort.per_class 2 needs 16 classes .* has 10"):
        cohort_method(Params.from_dict(raw), fixture_task, torch.device("cpu"))
