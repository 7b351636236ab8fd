"""A validation split carved from each task's training images (`data.val_per_class`), for choosing
hyperparameters on data the reported tables never use (docs/notes/2026-12-06-selection-protocol.md).

With `val_per_class` = k > 0, `prepare` takes k training images of every class (drawn with `data.seed`, a stream
of its own) out of the task's training split and writes them **as the task's evaluation split**: every accuracy
a run then reports (metrics/tasks, metrics/cl.json) is a validation accuracy, and the task's test images are
not written to data/ at all, so nothing a selection run computes can have seen them. k = 0 (the default) leaves
the task as it was built: the default pipeline's data and metrics are unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from pipeline.errors import InputError
from .sources import ImageSource, subset
from .streams import stream_rng
from .types import TaskData


def carve_validation(task: TaskData, per_class: int, seed: int) -> TaskData:
    """`task` with `per_class` training images of each class moved to its evaluation split (the test split
    dropped); the rest of the training split keeps its order."""
    if per_class == 0:
        return task
    labels = task.train_labels.numpy()
    counts = np.bincount(labels, minlength=len(task.classes))
    if counts.min() <= per_class:
        c = int(counts.argmin())
        raise InputError(f"data.val_per_class: {per_class} validation images of each class leave none to train on "
                         f"in task {task.name!r} (class {task.classes[c]!r} has {counts[c]} training images)")
    rng = stream_rng(seed, task.name, "validation")
    held = np.zeros(len(labels), bool)
    for c in range(len(task.classes)):
        held[rng.permutation(np.flatnonzero(labels == c))[:per_class]] = True
    val, train = torch.from_numpy(np.flatnonzero(held)), torch.from_numpy(np.flatnonzero(~held))
    return replace(task, train_images=_take(task.train_images, train), train_labels=task.train_labels[train],
                   test_images=_take(task.train_images, val), test_labels=task.train_labels[val])


def _take(images: torch.Tensor | ImageSource, idx: torch.Tensor):
    return subset(images, idx.tolist()) if isinstance(images, ImageSource) else images[idx]
