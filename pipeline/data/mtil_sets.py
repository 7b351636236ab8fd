"""MTIL's eleven data sets as torchvision reads them from disk, split as ZSCL splits them (Zheng et al., ICCV 2023).

Each task is one torchvision data set under ``data.root``, in the folder torchvision itself uses (``SOURCES``;
the layout of a ``torchvision.datasets.X(root=data.root, download=True)``, which is also ZSCL's data folder).
Nothing is ever downloaded: a missing folder is one InputError naming it, before any compute.

Splits are ZSCL's (mtil/src/datasets/collections.py at b96e714): the data set's own train and test splits
(Aircraft ``train``, not ``trainval``; DTD partition 1 ``train``; Flowers ``train``; OxfordPet ``trainval``),
and for the three with no test split (Caltech101, EuroSAT, SUN397) ZSCL's ``split_dataset``: a permutation of
the items by ``torch.randperm`` with a generator seeded 42, the first ``int(0.8 n)`` for training and the rest
for testing, which is what ``torch.utils.data.random_split`` does, so the split is ZSCL's item for item.
The seed is fixed, apart from ``data.seed``: a task's test set is the same in every run (and ZSCL's), and
``data.seed`` only draws the few-shot training subset. One difference: torchvision lists SUN397's images in
``rglob`` order, which depends on the file system, so here they are sorted by path first.

A leaf of pipeline/data (it imports no other module of the package but the name lists of ``mtil_names``):
the image sources (``sources.MtilImages``) open a split here in each DataLoader worker, and the ``mtil``
benchmark builds its tasks on :func:`mtil_split`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import InputError, MissingInput
from .mtil_names import FIXED_CLASSES, ORDER_I, TEMPLATES

SPLIT_SEED = 42  # ZSCL's split_dataset: torch.Generator().manual_seed(42)
TRAIN_FRACTION = 0.8  # ZSCL's split_dataset ratio

# Per task: the torchvision class, the folder under data.root that torchvision checks for (named when
# missing), and the constructor arguments of the train and test splits; None: one set, split here (above).
SOURCES: dict[str, tuple[str, str, tuple[dict, dict] | None]] = {
    "Aircraft": ("FGVCAircraft", "fgvc-aircraft-2013b", ({"split": "train"}, {"split": "test"})),
    "Caltech101": ("Caltech101", "caltech101/101_ObjectCategories", None),
    "CIFAR100": ("CIFAR100", "cifar-100-python", ({"train": True}, {"train": False})),
    "DTD": ("DTD", "dtd/dtd", ({"split": "train"}, {"split": "test"})),
    "EuroSAT": ("EuroSAT", "eurosat/2750", None),
    "Flowers": ("Flowers102", "flowers-102", ({"split": "train"}, {"split": "test"})),
    "Food": ("Food101", "food-101", ({"split": "train"}, {"split": "test"})),
    "MNIST": ("MNIST", "MNIST/raw", ({"train": True}, {"train": False})),
    "OxfordPet": ("OxfordIIITPet", "oxford-iiit-pet", ({"split": "trainval"}, {"split": "test"})),
    "StanfordCars": ("StanfordCars", "stanford_cars", ({"split": "train"}, {"split": "test"})),
    "SUN397": ("SUN397", "SUN397", None),
}
SPLITS = ("train", "test")


@dataclass(frozen=True)
class MtilSplit:
    """One split of one task: a map-style data set of (PIL image, int label), the class names (label order)
    and ZSCL's prompt templates (each with one ``{}``)."""

    dataset: Any  # a torchvision data set, or a torch.utils.data.Subset of one
    classes: list[str]
    templates: list[str]


def data_folder(root: str | Path, name: str) -> Path:
    return Path(root) / SOURCES[name][1]


def check_mtil_task(root: str | Path, name: str, key: str | None = None) -> None:
    """Fail before any compute if ``name`` is no MTIL task or its data set is not under ``root`` (``key``
    names the params key; default ``tasks.<name>``). Only looks at folders: torchvision's Caltech101 would
    create its folder when asked for a missing one, and CIFAR100 checksums every file."""
    where = key or f"tasks.{name}"
    if name not in SOURCES:
        raise InputError(f"{where}: {name!r} is not a task of the mtil benchmark ({', '.join(ORDER_I)})")
    folder = data_folder(root, name)
    if not folder.is_dir():
        raise MissingInput(f"{where}: MTIL data set {name} not found: folder {folder} does not exist (data.root "
                           f"is {str(root)!r}); nothing is downloaded: put torchvision's {SOURCES[name][0]} "
                           f"files there")


def _open(root: Path, name: str, **kwargs) -> Any:
    """torchvision's data set of task ``name`` (checked by :func:`check_mtil_task` first), errors as one line."""
    import torchvision.datasets

    cls, folder, _ = SOURCES[name]
    try:  # target_transform: StanfordCars' labels are numpy integers, every label here is an int
        return getattr(torchvision.datasets, cls)(root, download=False, target_transform=int, **kwargs)
    except (RuntimeError, OSError, ValueError, KeyError) as e:  # torchvision's "Dataset not found", a bad file
        raise InputError(f"tasks.{name}: torchvision's {cls} cannot read {root / folder} ({e}); nothing is "
                         f"downloaded") from e


def _split_indices(dataset: Any, name: str, split: str) -> list[int]:
    """ZSCL's split_dataset, item for item (module docstring); SUN397's items sorted by path first."""
    n = len(dataset)
    order = list(range(n))
    if name == "SUN397":  # torchvision lists it in rglob order; a private attribute, the only list it has
        order.sort(key=lambda i: str(dataset._image_files[i]))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_train = int(TRAIN_FRACTION * n)
    chosen = perm[:n_train] if split == "train" else perm[n_train:]
    return [order[i] for i in chosen]


def _class_names(name: str, dataset: Any, root: Path) -> list[str]:
    """ZSCL's fixed list (checked against the data set's own class count), or the data set's own classes with
    ``_`` turned into spaces, as ZSCL's process_labels."""
    own = getattr(dataset, "categories", None) or getattr(dataset, "classes", None)  # Caltech101: categories
    if name in FIXED_CLASSES:
        fixed = FIXED_CLASSES[name]
        if own is not None and len(own) != len(fixed):
            raise InputError(f"tasks.{name}: {data_folder(root, name)} holds {len(own)} classes, but ZSCL's "
                             f"class list of {name} has {len(fixed)}")
        return list(fixed)
    return [c.replace("_", " ") for c in own]


def mtil_split(root: str | Path, name: str, split: str) -> MtilSplit:
    """``split`` (train / test) of task ``name`` under ``root``: the data set, its class names, its templates."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
    root = Path(root)
    check_mtil_task(root, name)
    kwargs = SOURCES[name][2]
    if kwargs is None:
        from torch.utils.data import Subset

        full = _open(root, name)
        dataset, own = Subset(full, _split_indices(full, name, split)), full
    else:
        dataset = own = _open(root, name, **kwargs[SPLITS.index(split)])
    return MtilSplit(dataset=dataset, classes=_class_names(name, own, root), templates=list(TEMPLATES[name]))
