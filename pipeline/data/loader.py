"""Batches of a task's images through torch's DataLoader: decoding in worker processes, pinned on CUDA.

Every reader of a task's images goes through `batches`: training (the seeded order of pipeline/optim.py),
teacher features, prototypes and evaluation (the images in order). The batches are the index batches given,
item for item, whoever decodes them, so a run's numbers do not depend on `runtime.workers`. An in-memory
tensor with no workers is sliced directly: the embedded default then runs exactly as it did before loaders.

`runtime.workers` is a process-wide setting, like torch's thread count, set once by `runtime.setup`
(`configure`) and read here; the stages never pass it around.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from .sources import ImageSource

Images = torch.Tensor | ImageSource
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
    """A map-style data set whose items are whole batches: `batches[indices]` is `images[indices]`. With
    DataLoader's `batch_size=None` each index batch of the sampler goes to one worker as it is."""

    def __init__(self, images: Images):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]


def batches(images: Images, order: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """uint8 batches `images[indices]`, one per index batch of `order`, in order."""
    if isinstance(images, torch.Tensor) and workers() == 0:
        for indices in order:
            yield images[indices]
        return
    order = list(order)  # a sampler is iterated once per pass; generators once only
    loader = DataLoader(_IndexedBatches(images), batch_size=None, sampler=order, num_workers=workers(),
                        pin_memory=_settings["pin_memory"])
    yield from loader


def in_order(count: int, batch_size: int) -> list[torch.Tensor]:
    """Index batches of 0..count-1 in order, `batch_size` each (the last one shorter)."""
    return [torch.arange(i, min(i + batch_size, count)) for i in range(0, count, batch_size)]


def sequential(images: Images, batch_size: int) -> Iterator[torch.Tensor]:
    """Every image, in order, in batches of `batch_size` (features, evaluation)."""
    return batches(images, in_order(len(images), batch_size))
