"""A frozen teacher's outputs for the training batch: cached per image on disk, or computed on the batch.

Without random augmentation (the default, as in ZSCL) a teacher's view of a training image never changes
during a task, so its features are computed once and read by index at every step: a step then costs the
student's forward and backward alone (spec, "Cost by construction"). The cache is a `.npy` file read through
a memory map, so a stage holds the rows it reads, not the whole array: E0's come from the prototypes stage
(a DVC output); E_{m-1}'s from `cached_array`, a file named by the digest of what produced it (the teacher's
weights, the task's images, the precision and batch size of the pass), so a rerun with other loss settings,
or another method, reads them back instead of running the teacher over the task again.

With `train.augment` each step's images are new, and the teachers run on the batch itself (no gradient).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline import distributed, io, paths

Rows = np.ndarray | torch.Tensor  # a (memory-mapped) array of one row per training image


def gather(array: Rows, indices: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The rows of `array` at `indices`, as a tensor on `device` (only those rows are read from a memmap)."""
    if isinstance(array, torch.Tensor):
        return array[indices.to(array.device)].to(device)
    return torch.from_numpy(np.ascontiguousarray(array[indices.cpu().numpy()])).to(device)


class TeacherRows:
    """`rows(images, indices)`: a teacher's output for each image of a training batch, from `cached` (one row
    per training image) or, where images are augmented, from `on_batch(images)`, run without gradient."""

    def __init__(self, device: torch.device, cached: Rows | None = None,
                 on_batch: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if (cached is None) == (on_batch is None):
            raise ValueError("TeacherRows: give exactly one of cached and on_batch")
        self.device, self.cached, self.on_batch = device, cached, on_batch

    def __call__(self, images: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return gather(self.cached, indices, self.device)
        with torch.no_grad():
            return self.on_batch(images).float()


def save_array(path: Path, array: torch.Tensor) -> None:
    """`array` as a .npy file (atomically: a killed stage never leaves half a cache behind)."""
    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array.detach().cpu().numpy())


def load_array(path: Path) -> np.ndarray:
    """A .npy file written by `save_array`, memory-mapped read-only (no pickle: allow_pickle is False)."""
    return np.load(path, mmap_mode="r", allow_pickle=False)


def digest(*parts: object) -> str:
    """A stable key of JSON-able parts and files (each Path's bytes are hashed)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        if isinstance(part, Path):
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        else:
            h.update(json.dumps(part, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()


def images_key(images) -> object:
    """What identifies a task's images in a cache key: a source's description (files and their digests), or
    the digest of an in-memory tensor's bytes."""
    if isinstance(images, torch.Tensor):
        return hashlib.blake2b(images.contiguous().numpy().tobytes(), digest_size=16).hexdigest()
    return images.describe()


def cached_array(key: str, compute: Callable[[], torch.Tensor], folder: Path = paths.FEATURE_CACHE) -> np.ndarray:
    """The array cached under `key` in `folder`, computed and written first if it is not there yet. Several
    processes: rank 0 alone computes and writes it, the others wait at a barrier (every rank reaches it, cache
    there or not, so none waits for a rank that skipped it) and then read the same file."""
    path = Path(folder) / f"{key}.npy"
    if distributed.is_main() and not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        save_array(path, compute())
    distributed.barrier()
    return load_array(path)
