"""Tests of the mtil benchmark: each of the eleven torchvision data sets read from a tiny fake in the exact
on-disk layout torchvision 0.29 reads (2-3 classes of 8x8 images, every class its own colour, so a label can
be checked against its image), ZSCL's splits, names, templates and orders, few-shot draws, the missing-data
errors, and the benchmark end to end through params and the prepare stage.

CIFAR100 and Flowers102 checksum their annotation files against the real ones' MD5s: their fakes set the
class's expected MD5s to the fakes' own (monkeypatch), so torchvision's reading code still runs unchanged."""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import rejected_params, run_in
from pipeline.params import Params, TaskLink, task_order
from pipeline.data import load_task
from pipeline.data.benchmarks import build_task, check_task_names
from pipeline.data.images import fit_image
from pipeline.data.mtil import dataset_labels, few_shot_indices, order_tasks
from pipeline.data.mtil_sets import SOURCES, SPLIT_SEED, check_mtil_task, mtil_split
from pipeline.data.mtil_names import FIXED_CLASSES, ORDER_I, ORDER_II, ORDERS, TEMPLATES
from pipeline.errors import InputError, MissingInput

KNOWN_CLASSES = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10, "Flowers": 102,
                 "Food": 101, "MNIST": 10, "OxfordPet": 37, "StanfordCars": 196, "SUN397": 397}
EUROSAT_FOLDERS = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake"]


def colour(c: int) -> tuple[int, int, int]:
    """Class c's colour: apart enough for the first classes, defined for all 101 of the Caltech fake."""
    return (30 + 90 * c) % 256, (200 - 70 * c) % 256, (60 + 37 * c) % 256


@dataclass
class Fake:
    classes: list[str] | None  # the cleaned names the adapter must give; None: ZSCL's fixed list
    train: int
    test: int


def _jpg(path: Path, c: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour(c)).save(path, quality=95)


def _lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _split_of(per_split: dict[str, int], n_classes: int):
    """(split, class, i) for `per_split[split]` items of each class, train first."""
    return [(s, c, i) for s, per in per_split.items() for c in range(n_classes) for i in range(per)]


# --- one fake per torchvision class, in its on-disk layout ---------------------------------------------------


def fake_aircraft(root: Path, mp) -> Fake:
    base = root / "fgvc-aircraft-2013b" / "data"
    classes = ["707-320", "A300B4", "Cessna 172"]  # variants.txt: one name a line, spaces allowed
    _lines(base / "variants.txt", classes)
    rows = {"train": [], "test": []}
    for n, (split, c, _) in enumerate(_split_of({"train": 2, "test": 1}, 3)):
        _jpg(base / "images" / f"{n:07d}.jpg", c)
        rows[split].append(f"{n:07d} {classes[c]}")
    for split, lines in rows.items():
        _lines(base / f"images_variant_{split}.txt", lines)
    return Fake(classes, 6, 3)


def fake_caltech101(root: Path, mp) -> Fake:
    """All 101 category folders (ZSCL's names are a positional list of 101), 3 images in the first three."""
    cats = root / "caltech101" / "101_ObjectCategories"
    _jpg(cats / "BACKGROUND_Google" / "image_0001.jpg", 0)  # torchvision drops this folder
    for c in range(101):
        for i in range(3 if c < 3 else 1):
            _jpg(cats / f"class_{c:03d}" / f"image_{i + 1:04d}.jpg", c)
    return Fake(None, int(0.8 * 107), 107 - int(0.8 * 107))


def fake_cifar100(root: Path, mp) -> Fake:
    from torchvision.datasets import CIFAR100

    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    names = ["apple", "aquarium_fish", "bear"]
    for split, per in (("train", 2), ("test", 1)):
        labels = [c for c in range(3) for _ in range(per)]
        planes = np.stack([np.repeat(np.array(colour(c), np.uint8), 32 * 32) for c in labels])  # R, G, B planes
        with open(base / split, "wb") as f:
            pickle.dump({"data": planes, "fine_labels": labels, "coarse_labels": [0] * len(labels)}, f)
    with open(base / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": ["fruit"]}, f)
    mp.setattr(CIFAR100, "train_list", [["train", _md5(base / "train")]])
    mp.setattr(CIFAR100, "test_list", [["test", _md5(base / "test")]])
    mp.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(base / "meta")})
    return Fake(["apple", "aquarium fish", "bear"], 6, 3)


def fake_dtd(root: Path, mp) -> Fake:
    base = root / "dtd" / "dtd"
    classes = ["banded", "blotchy", "braided"]
    rows = {"train": [], "test": []}
    for split, c, i in _split_of({"train": 2, "test": 1}, 3):
        rel = f"{classes[c]}/{classes[c]}_{split}{i}.jpg"
        _jpg(base / "images" / rel, c)
        rows[split].append(rel)
    for split, lines in rows.items():
        _lines(base / "labels" / f"{split}1.txt", lines)  # partition 1
    return Fake(classes, 6, 3)


def fake_eurosat(root: Path, mp) -> Fake:
    for c, folder in enumerate(EUROSAT_FOLDERS):  # all ten: ZSCL's names are positional
        for i in range(3):
            _jpg(root / "eurosat" / "2750" / folder / f"{folder}_{i + 1}.jpg", c)
    return Fake(None, 24, 6)


def fake_flowers(root: Path, mp) -> Fake:
    from scipy.io import savemat
    from torchvision.datasets import Flowers102

    base = root / "flowers-102"
    labels = [1, 1, 1, 2, 2, 2, 3, 3, 3]  # image ids 1..9, classes 1-based as in imagelabels.mat
    for image_id, label in enumerate(labels, 1):
        _jpg(base / "jpg" / f"image_{image_id:05d}.jpg", label - 1)
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 2, 4, 5, 7, 8]]), "valid": np.array([[3, 6]]),
                                 "tstid": np.array([[3, 6, 9]])})
    mp.setattr(Flowers102, "_file_dict", {**Flowers102._file_dict,
                                          "label": ("imagelabels.mat", _md5(base / "imagelabels.mat")),
                                          "setid": ("setid.mat", _md5(base / "setid.mat"))})
    return Fake(None, 6, 3)


def fake_food(root: Path, mp) -> Fake:
    base = root / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "baklava"]
    meta = {"train": {}, "test": {}}
    for split, c, i in _split_of({"train": 2, "test": 1}, 3):
        rel = f"{classes[c]}/{split}{i}"
        _jpg(base / "images" / f"{rel}.jpg", c)
        meta[split].setdefault(classes[c], []).append(rel)
    for split, content in meta.items():
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(content))
    return Fake(["apple pie", "baby back ribs", "baklava"], 6, 3)


def _idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 (type 0x08), dimensions big-endian, as MNIST ships (unzipped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_mnist(root: Path, mp) -> Fake:
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    for prefix, per in (("train", 2), ("t10k", 1)):
        labels = np.array([c for c in range(3) for _ in range(per)])
        _idx(raw / f"{prefix}-images-idx3-ubyte", np.stack([np.full((8, 8), colour(c)[0]) for c in labels]))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return Fake(list(MNIST.classes), 6, 3)  # the names of all ten digits, whatever the files hold


def fake_oxford_pet(root: Path, mp) -> Fake:
    base = root / "oxford-iiit-pet"
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("Bengal", 1)]  # (image prefix, species: cat 1, dog 2)
    rows = {"trainval": [], "test": []}
    for split, c, i in _split_of({"trainval": 2, "test": 1}, 3):
        image_id = f"{breeds[c][0]}_{split}{i}"
        _jpg(base / "images" / f"{image_id}.jpg", c)
        rows[split].append(f"{image_id} {c + 1} {breeds[c][1]} {i + 1}")  # id, class, species, breed id
    for split, lines in rows.items():
        _lines(base / "annotations" / f"{split}.txt", lines)
    return Fake(["Abyssinian", "American Bulldog", "Bengal"], 6, 3)


def _annotations(rows: list[tuple[str, int]]) -> np.ndarray:
    """A struct array like cars_*_annos.mat's (the fields torchvision reads: fname, class 1-based)."""
    out = np.zeros((1, len(rows)), dtype=[("fname", "O"), ("class", "O")])
    for j, (fname, cls) in enumerate(rows):
        out["fname"][0, j], out["class"][0, j] = fname, np.array([[cls]], np.uint8)
    return out


def fake_stanford_cars(root: Path, mp) -> Fake:
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Ram C/V Cargo_Van Minivan 2012"]
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})  # a cell array
    rows = {"train": [], "test": []}
    for split, c, i in _split_of({"train": 2, "test": 1}, 3):
        fname = f"{c:02d}{i:03d}.jpg"
        _jpg(base / f"cars_{split}" / fname, c)
        rows[split].append((fname, c + 1))
    savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _annotations(rows["train"])})
    savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _annotations(rows["test"])})
    return Fake(["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Ram C/V Cargo Van Minivan 2012"], 6, 3)


def fake_sun397(root: Path, mp) -> Fake:
    base = root / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    _lines(base / "ClassName.txt", classes)
    for c, cls in enumerate(classes):
        for i in range(4):
            _jpg(base / cls.lstrip("/") / f"sun_{c}{i}.jpg", c)
    return Fake(["abbey", "apartment building/outdoor", "bakery/shop"], 9, 3)


FAKES = {"Aircraft": fake_aircraft, "Caltech101": fake_caltech101, "CIFAR100": fake_cifar100, "DTD": fake_dtd,
         "EuroSAT": fake_eurosat, "Flowers": fake_flowers, "Food": fake_food, "MNIST": fake_mnist,
         "OxfordPet": fake_oxford_pet, "StanfordCars": fake_stanford_cars, "SUN397": fake_sun397}


def test_every_task_has_a_fake():
    assert set(FAKES) == set(SOURCES) == set(ORDER_I) == set(TEMPLATES)


# --- the adapter on each fake ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER_I)
def test_reads_each_data_set(tmp_path, monkeypatch, name):
    fake = FAKES[name](tmp_path, monkeypatch)
    for split, size in (("train", fake.train), ("test", fake.test)):
        part = mtil_split(tmp_path, name, split)
        assert part.classes == (fake.classes if fake.classes is not None else FIXED_CLASSES[name])
        assert part.templates == TEMPLATES[name]
        assert len(part.dataset) == size
        labels = dataset_labels(part.dataset)  # from torchvision's own lists, without decoding
        for i in range(size):
            image, label = part.dataset[i]
            assert isinstance(image, Image.Image) and type(label) is int
            assert 0 <= label < len(part.classes) and label == labels[i]
            pixel = np.asarray(image.convert("RGB"))[4, 4].astype(int)
            expected = colour(label) if name != "MNIST" else (colour(label)[0],) * 3
            assert np.abs(pixel - expected).max() <= 6, (split, i, label, pixel)


def test_name_lists_have_the_known_counts(tmp_path, monkeypatch):
    """ZSCL's fixed lists hold every class; the others come from the data (the fakes hold them all), MNIST's
    from torchvision (all ten)."""
    for name, classes in FIXED_CLASSES.items():
        assert len(classes) == len(set(classes)) == KNOWN_CLASSES[name], name
    fake_mnist(tmp_path, monkeypatch)
    assert len(mtil_split(tmp_path, "MNIST", "test").classes) == KNOWN_CLASSES["MNIST"]


@pytest.mark.parametrize("name", ["Caltech101", "EuroSAT", "SUN397"])
def test_no_test_split_is_split_as_zscl_does(tmp_path, monkeypatch, name):
    """80/20 by torch.randperm seeded 42: torch.utils.data.random_split's items, as ZSCL's split_dataset."""
    FAKES[name](tmp_path, monkeypatch)
    train, test = (mtil_split(tmp_path, name, s).dataset for s in ("train", "test"))
    full = train.dataset
    assert sorted(train.indices + test.indices) == list(range(len(full)))
    assert len(train.indices) == int(0.8 * len(full))
    if name == "SUN397":  # sorted by path first, as rglob's order is the file system's
        paths = sorted(str(p) for p in full._image_files)
        assert [paths.index(str(full._image_files[i])) for i in train.indices] == \
            torch.randperm(len(full), generator=torch.Generator().manual_seed(SPLIT_SEED))[:len(train.indices)].tolist()
    else:
        zscl = torch.utils.data.random_split(full, [len(train.indices), len(test.indices)],
                                             generator=torch.Generator().manual_seed(SPLIT_SEED))
        assert (train.indices, test.indices) == (zscl[0].indices, zscl[1].indices)


# --- names, templates, orders, few-shot ---------------------------------------------------------------------


def test_templates_have_exactly_one_slot():
    for name, templates in TEMPLATES.items():
        assert templates and all(t.count("{}") == 1 for t in templates), name


def test_orders_are_permutations_of_the_eleven():
    assert len(ORDER_I) == 11 and ORDER_I == sorted(ORDER_I, key=str.lower)  # order I: alphabetical
    assert sorted(ORDER_II) == sorted(ORDER_I) and ORDER_II != ORDER_I
    assert ORDER_II[:3] == ["StanfordCars", "Food", "MNIST"] and ORDER_II[-1] == "CIFAR100"
    for order, names in ORDERS.items():
        assert task_order({name: TaskLink(**link) for name, link in order_tasks(order).items()}) == names
    with pytest.raises(ValueError, match="III"):
        order_tasks("III")


def test_few_shot_picks_k_per_class_deterministically():
    labels = [c for c in (2, 0, 1) for _ in range(20)] + [3]  # class 3 has one item
    picked = few_shot_indices(labels, 5, seed=0, name="DTD")
    assert picked == sorted(picked) and len(set(picked)) == len(picked)
    counts = np.bincount([labels[i] for i in picked])
    assert counts.tolist() == [5, 5, 5, 1]  # a class with fewer than k keeps all of them
    assert few_shot_indices(labels, 5, seed=0, name="DTD") == picked
    assert few_shot_indices(labels, 5, seed=1, name="DTD") != picked
    assert few_shot_indices(labels, 5, seed=0, name="Food") != picked  # one stream per task
    assert few_shot_indices(labels, None, seed=0, name="DTD") == list(range(len(labels)))


# --- missing or broken data ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ORDER_I)
def test_missing_data_set_names_its_folder(tmp_path, name):
    with pytest.raises(MissingInput) as info:
        check_task_names("mtil", str(tmp_path), [name])
    message = str(info.value)
    folder = tmp_path / SOURCES[name][1]
    assert "\n" not in message and message.startswith(f"tasks.{name}:")
    assert str(folder) in message and "nothing is downloaded" in message
    with pytest.raises(MissingInput):
        mtil_split(tmp_path, name, "train")
    assert list(tmp_path.iterdir()) == [], "nothing may be created (torchvision's Caltech101 makes its folder)"


def test_unknown_task_and_unreadable_files(tmp_path, monkeypatch):
    with pytest.raises(InputError, match=r"tasks\.ImageNet: 'ImageNet' is not a task of the mtil benchmark"):
        check_mtil_task(tmp_path, "ImageNet")
    fake_dtd(tmp_path, monkeypatch)
    (tmp_path / "dtd" / "dtd" / "labels" / "test1.txt").unlink()
    with pytest.raises(InputError, match=r"tasks\.DTD: torchvision's DTD cannot read .*dtd.*nothing is downloaded"):
        mtil_split(tmp_path, "DTD", "test")
    fake_cifar100(tmp_path, monkeypatch)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"truncated")  # fails torchvision's checksum
    with pytest.raises(InputError, match="cifar-100-python"):
        mtil_split(tmp_path, "CIFAR100", "train")


# --- the benchmark through params, build_task and the prepare stage -----------------------------------------

TASKS = {"DTD": {"prev": "e0"}, "MNIST": {"prev": "DTD"}}


def _raw(micro_params: dict, root: Path, pretrained: str | None = "e0.bin", method: str = "finetune", **data):
    raw = copy.deepcopy(micro_params)
    raw["data"].update(benchmark="mtil", root=str(root), image_size=16, **data)
    raw["model"]["pretrained"] = pretrained
    raw["train"]["method"] = method
    raw["tasks"] = copy.deepcopy(TASKS)
    return raw


def test_params_need_a_pretrained_e0_and_the_data(micro_params, tmp_path, monkeypatch):
    message = rejected_params(_raw(micro_params, tmp_path))
    assert "tasks.DTD" in message and str(tmp_path / "dtd" / "dtd") in message
    fake_dtd(tmp_path, monkeypatch)
    fake_mnist(tmp_path, monkeypatch)
    message = rejected_params(_raw(micro_params, tmp_path, pretrained=None))
    assert message.startswith("params: model.pretrained: null") and "mtil benchmark has none" in message
    oracle = _raw(micro_params, tmp_path, method="zscl")
    oracle["loss"]["zscl_reference"] = "corpus_oracle"  # ZSCL's oracle form reads E0's corpus; as published it
    message = rejected_params(oracle)  # reads the generated reference set, which every benchmark has
    assert "train.method: zscl" in message and "mtil benchmark has none" in message
    Params.from_dict(_raw(micro_params, tmp_path, method="zscl"))
    message = rejected_params(_raw(micro_params, tmp_path, few_shot=0))
    assert "data.few_shot" in message
    message = rejected_params({**micro_params, "data": {**micro_params["data"], "few_shot": 2}})
    assert "data.few_shot: applies to the mtil benchmark only" in message
    params = Params.from_dict(_raw(micro_params, tmp_path, few_shot=1), libraries=())
    assert params.task_names == ["DTD", "MNIST"] and params.corpus_needed_by is None


def test_build_task_decodes_and_fits_as_the_folder_benchmark(micro_params, tmp_path, monkeypatch):
    fake_dtd(tmp_path, monkeypatch)
    fake_mnist(tmp_path, monkeypatch)
    data = Params.from_dict(_raw(micro_params, tmp_path, few_shot=1), libraries=()).data
    task = build_task(data, "DTD")
    assert (task.name, task.classes, task.templates) == ("DTD", ["banded", "blotchy", "braided"], TEMPLATES["DTD"])
    assert task.train_images.shape == (3, 3, 16, 16) and task.train_images.dtype == torch.uint8
    assert task.train_labels.tolist() == [0, 1, 2] and task.test_labels.tolist() == [0, 1, 2]
    part = mtil_split(tmp_path, "DTD", "test")
    assert torch.equal(task.test_images[1], torch.tensor(fit_image(part.dataset[1][0], 16)))
    digits = build_task(data, "MNIST")  # greyscale, converted to RGB
    assert len(digits.classes) == 10 and digits.test_images.shape == (3, 3, 16, 16)
    assert (digits.test_images[2] == colour(2)[0]).all()


def test_prepare_stage_writes_mtil_tasks(micro_params, tmp_path, monkeypatch, capsys):
    root, project = tmp_path / "mtil", tmp_path / "project"
    project.mkdir()
    fake_dtd(root, monkeypatch)
    fake_mnist(root, monkeypatch)
    (project / "params.yaml").write_text(yaml.safe_dump(_raw(micro_params, root, pretrained=None, few_shot=1)))
    with pytest.raises(SystemExit) as info:
        run_in(project, monkeypatch, "pipeline.stages.prepare")
    assert info.value.code == 2 and "model.pretrained: null" in capsys.readouterr().err
    assert not (project / "data").exists()

    (project / "params.yaml").write_text(yaml.safe_dump(_raw(micro_params, root, few_shot=1)))
    run_in(project, monkeypatch, "pipeline.stages.prepare")
    tasks = {name: load_task(project / "data" / "tasks" / name) for name in TASKS}
    assert tasks["MNIST"].classes[:2] == ["0 - zero", "1 - one"] and len(tasks["MNIST"].train_labels) == 3
    assert tasks["DTD"].prompts()[0][0] == "a photo of a banded texture."
    assert json.loads((project / "data" / "corpus" / "captions.json").read_text()) == []
