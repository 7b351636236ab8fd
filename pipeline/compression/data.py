"""Batches and augmentation of the compression branch's classification task (accuracy: pipeline/metrics.py)."""
from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from pipeline import optim


def class_counts(labels: Tensor, num_classes: int) -> Tensor:
    return torch.bincount(labels, minlength=num_classes)


def class_weights(labels: Tensor, num_classes: int) -> Tensor:
    """Inverse-frequency weights N / (K n_c) (1 for every class of a balanced set; 0 for an absent class)."""
    counts = class_counts(labels, num_classes).double()
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights.float()


def batches(labels: Tensor, batch_size: int, steps: int, seed: int, balance: str, per_class: int = 2) -> Iterator[Tensor]:
    """`steps` index batches: epochs of seeded permutations; with `balance == "sampler"` draws with replacement
    where every class is equally likely (each image with probability 1 / (K n_c)); with "per_class",
    `per_class_batches`."""
    if balance == "per_class":
        yield from per_class_batches(labels, batch_size, steps, seed, per_class)
        return
    if balance != "sampler":
        yield from optim.batches(len(labels), batch_size, steps, seed)
        return
    num_classes = int(labels.max()) + 1
    probs = class_weights(labels, num_classes)[labels].double()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield torch.multinomial(probs, batch_size, replacement=True, generator=generator)


def per_class_batches(labels: Tensor, batch_size: int, steps: int, seed: int, per_class: int) -> Iterator[Tensor]:
    """`steps` batches of batch_size / per_class distinct classes (a seeded draw without replacement each step)
    with per_class distinct images of each (fewer images than that in a class: all of them, repeated), as the
    MCL authors' MPerClassSampler: every image of a batch has another of its class, the positive a supervised
    contrastive loss needs."""
    classes = int(labels.max()) + 1
    members = [torch.nonzero(labels == c).flatten() for c in range(classes)]
    present = [c for c in range(classes) if len(members[c])]
    n_classes = batch_size // per_class
    if n_classes > len(present):
        raise ValueError(f"a batch of {batch_size} at {per_class} per class needs {n_classes} classes; the set has {len(present)}")
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        chosen = torch.randperm(len(present), generator=generator)[:n_classes]
        picks = []
        for c in chosen.tolist():
            pool = members[present[c]]
            order = torch.randperm(len(pool), generator=generator).repeat(-(-per_class // len(pool)))
            picks.append(pool[order[:per_class]])
        yield torch.cat(picks)


def steps_for(num_items: int, batch_size: int, epochs: int) -> int:
    """Optimisation steps of `epochs` passes over the training set (full batches only, at least one)."""
    return max(1, epochs * (num_items // min(batch_size, num_items)))


def random_flips(n: int, generator: torch.Generator, enabled: bool) -> Tensor:
    """(n,) bool: which images of the batch are mirrored left-right."""
    if not enabled:
        return torch.zeros(n, dtype=torch.bool)
    return torch.rand(n, generator=generator) < 0.5


def apply_flips(x: Tensor, flips: Tensor) -> Tensor:
    return torch.where(flips.to(x.device)[:, None, None, None], x.flip(-1), x)


def random_crops(n: int, padding: int, generator: torch.Generator) -> Tensor:
    """(n, 2) int64: each image's top-left corner (row, column) in its zero-padded copy, uniform in
    [0, 2 * padding] (torchvision's RandomCrop(size, padding))."""
    return torch.randint(2 * padding + 1, (n, 2), generator=generator)


def apply_crops(images: Tensor, corners: Tensor, padding: int) -> Tensor:
    """Crop each image of (B, C, H, W) at its corner of `random_crops` from the image zero-padded by `padding`
    a side (black for uint8 images: the padding is added before normalisation, as torchvision does)."""
    h, w = images.shape[-2:]
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    return torch.stack([padded[b, :, r : r + h, c : c + w] for b, (r, c) in enumerate(corners.tolist())])


@torch.no_grad()
def predict(fn: Callable[[Tensor], Tensor], images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """fn(uint8 batch on device) -> (B, K) scores, over all images in batches; returns (N, K) on the CPU."""
    return torch.cat([fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)])
