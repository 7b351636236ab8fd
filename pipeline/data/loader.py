"""Batches of a task's images through torch's DataLoader: decoding in worker processes, pinned on CUDA.

Every reader of a task's images goes through `batches`: training (the seeded order of pipeline/optim.py),
teacher features, prototypes and evaluation (the images in order). The batches are the index batches given,
item for item, whoever decodes them, so a run's numbers do not depend on `runtime.workers`. An in-memory
tensor (the embedded benchmarks) is sliced in the stage's process: workers would only copy it, and the
embedded default runs exactly as it did before loaders.

`runtime.workers` is a process-wide setting, like torch's thread count, set once by the stage (`configure`,
called by stages/common.py's `setup_runtime`) and read here; the stages never pass it around.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .sources import ImageSource

Images = torch.Tensor | ImageSource
Transform = Callable[[torch.Tensor, int, torch.Tensor], torch.Tensor]  # (uint8 batch, its step, its indices) -> batch
_settings = {"workers": 0, "pin_memory": False}


def configure(workers: int, pin_memory: bool) -> None:
    """Worker processes per loader (0: decode in this process) and whether batches land in pinned memory
    (CUDA: the copy to the device then overlaps compute; `runtime.to_device` copies non-blocking)."""
    if workers < 0:
        raise ValueError(f"workers: must be >= 0, got {workers}")
    _settings.update(workers=workers, pin_memory=pin_memory)


def workers() -> int:
    return _settings["workers"]


class _IndexedBatches(Dataset):
    """A map-style data set whose items are whole batches: item `(i, indices)` is `images[indices]`, through
    `transform(batch, i, indices)` where one is given. With DataLoader's `batch_size=None` each item of the
    sampler goes to one worker as it is."""

    def __init__(self, images: Images, transform: Transform | None):
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item: tuple[int, torch.Tensor]) -> torch.Tensor:
        i, indices = item
        batch = self.images[indices]
        return batch if self.transform is None else self.transform(batch, i, indices)


def batches(images: Images, order: Iterable[torch.Tensor], transform: Transform | None = None) -> Iterator[torch.Tensor]:
    """uint8 batches `images[indices]`, one per index batch of `order`, in order; `transform(batch, i, indices)`
    (augmentation, pipeline/data/augment.py) applied to the i-th where the batch is made. An in-memory tensor
    is sliced here (workers would only copy it); a source is decoded by the loader's workers."""
    if isinstance(images, torch.Tensor):
        for i, indices in enumerate(order):
            batch = images[indices]
            yield batch if transform is None else transform(batch, i, indices)
        return
    items = list(enumerate(order))  # a sampler is iterated once per pass; generators once only
    loader = DataLoader(_IndexedBatches(images, transform), batch_size=None, sampler=items,
                        num_workers=workers(), pin_memory=_settings["pin_memory"])
    yield from loader


def in_order(count: int, batch_size: int) -> list[torch.Tensor]:
    """Index batches of 0..count-1 in order, `batch_size` each (the last one shorter)."""
    return [torch.arange(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]


def sequential(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """Every image, in order, in batches of `batch_size` (features, evaluation)."""
    return batches(images, in_order(len(images), batch_size))


CHECK_BATCH = 64  # images per loader batch when every item is decoded once to check it


def check_decodes(images: ImageSource, what: str = "read images") -> ImageSource:
    """Decode every item of `images` once, through the workers, and return it: a source made while
    preparing (folder, mtil) names a bad file there, not in the middle of a training."""
    total = -(-len(images) // CHECK_BATCH)
    for _ in tqdm(sequential(images, CHECK_BATCH), total=total, desc=what, leave=False, disable=total < 10):
        pass
    return images
