"""The ``mtil`` benchmark: MTIL's eleven data sets (ZSCL, Zheng et al., ICCV 2023) read by torchvision from disk.

The data sets themselves, opened by torchvision under ``data.root`` and split as ZSCL splits them, are
``mtil_sets``; class names and templates are ZSCL's (``mtil_names``). The interface the streaming loaders build
on is ``mtil_sets.mtil_split`` (a map-style data set of (PIL image, int label) with its class names and
templates), :func:`dataset_labels` and :func:`few_shot_indices`; :func:`build_mtil_task` makes a task's splits
image sources (``sources.MtilImages``), decoded on demand and fitted as the folder benchmark fits them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import InputError
from . import loader
from .mtil_names import ORDER_I, ORDERS
from .mtil_sets import data_folder, mtil_split
from .sources import MtilImages
from .streams import stream_rng
from .types import TaskData


def mtil_task_names() -> list[str]:
    """The eleven tasks, in order I."""
    return list(ORDER_I)


def order_tasks(order: str) -> dict[str, dict[str, str]]:
    """The ``tasks:`` section of params.yaml for MTIL order ``I`` or ``II``: each task names its predecessor,
    the first one E0 (``e0``, pipeline.params.E0). params.yaml's chain is explicit, so an order is this chain."""
    if order not in ORDERS:
        raise ValueError(f"order: {order!r} is not an MTIL order ({', '.join(ORDERS)})")
    names = ORDERS[order]
    return {name: {"prev": prev} for name, prev in zip(names, ["e0", *names[:-1]])}


def dataset_labels(dataset: Any) -> list[int]:
    """Every item's label, without decoding an image: from the list each torchvision data set keeps (private
    attributes of some), else by reading every item. A Subset maps its indices."""
    from torch.utils.data import Subset

    if isinstance(dataset, Subset):
        base = dataset_labels(dataset.dataset)
        return [base[i] for i in dataset.indices]
    for attr in ("_labels", "targets", "y"):  # most | CIFAR100, MNIST, EuroSAT (ImageFolder) | Caltech101
        labels = getattr(dataset, attr, None)
        if labels is not None:  # MNIST's is a tensor: tolist() is one call, not 60000
            return [int(y) for y in (labels.tolist() if hasattr(labels, "tolist") else labels)]
    if hasattr(dataset, "_samples"):  # StanfordCars: (path, label) pairs
        return [int(y) for _, y in dataset._samples]
    return [int(dataset[i][1]) for i in range(len(dataset))]


def few_shot_indices(labels: list[int], k: int | None, seed: int, name: str) -> list[int]:
    """Positions of ``k`` items per class, drawn without replacement from the stream (seed, task); a class with
    fewer keeps all of them. ``k`` None: every position. Sorted, so the data set's order stays."""
    if k is None:
        return list(range(len(labels)))
    if k < 1:
        raise ValueError(f"k: must be >= 1 or None, got {k}")
    rng = stream_rng(seed, "mtil", "few_shot", name)
    labels_arr = np.asarray(labels, dtype=np.int64)
    chosen = []
    for c in np.unique(labels_arr):  # sorted, so the draws do not depend on the items' order
        where = np.flatnonzero(labels_arr == c)
        chosen.extend(where if len(where) <= k else rng.choice(where, size=k, replace=False))
    return sorted(int(i) for i in chosen)


def build_mtil_task(root: str | Path, name: str, *, image_size: int, few_shot: int | None, seed: int) -> TaskData:
    """Task ``name``: every test image, and every training image or ``few_shot`` per class (drawn with
    ``seed``), as sources that decode them on demand (a full set holds GBs of pixels), each item decoded once
    here so that a bad file fails while preparing."""
    train, test = mtil_split(root, name, "train"), mtil_split(root, name, "test")
    if train.classes != test.classes:
        raise InputError(f"tasks.{name}: the train and test splits under {data_folder(root, name)} have different "
                         f"classes ({len(train.classes)} and {len(test.classes)})")
    train_labels = dataset_labels(train.dataset)
    shots = few_shot_indices(train_labels, few_shot, seed, name)
    return TaskData(name=name, classes=train.classes, templates=train.templates,
                    train_images=loader.check_decodes(MtilImages(str(root), name, "train", shots, image_size)),
                    train_labels=torch.tensor([train_labels[i] for i in shots], dtype=torch.int64),
                    test_images=loader.check_decodes(MtilImages(str(root), name, "test", list(range(len(test.dataset))),
                                                                image_size)),
                    test_labels=torch.tensor(dataset_labels(test.dataset), dtype=torch.int64))
