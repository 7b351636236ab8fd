"""Class prototypes of the dual-teacher method (docs/methods/dual_teacher.md, steps 1 and 3): pure functions.

Prototypes are buffers, never parameters: every result here is detached. Features are L2-normalised per row
before averaging, so raw encoder outputs and normalised features give the same prototypes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _class_sums(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class sums of the normalised rows (C, d) and per-class counts (C,), without a loop over classes."""
    unit = F.normalize(features.detach(), dim=-1)
    sums = unit.new_zeros(num_classes, unit.shape[1]).index_add_(0, labels, unit)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums, counts


def initial_prototypes(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Step 1: ``p_c = norm(mean_{k: y_k = c} norm(f_k))``.

    Args:
        features: (N, d) E0 image features of the task's training images.
        labels: (N,) int64 in [0, num_classes).
        num_classes: C.
    Returns:
        (C, d) unit-norm prototypes, detached.
    Raises:
        ValueError: a label out of range, or a class without any sample (its prototype is undefined).
    """
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        low, high = int(labels.min()), int(labels.max())
        raise ValueError(f"labels must lie in [0, {num_classes}); got [{low}, {high}]")
    sums, counts = _class_sums(features, labels, num_classes)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"no training sample for class {missing[0]} (classes without samples: {missing})")
    # norm(sum) == norm(mean): dividing by the count first would not change the direction.
    return F.normalize(sums, dim=-1)


def update_prototypes(prototypes: Tensor, features: Tensor, labels: Tensor, gamma: float) -> Tensor:
    """Step 3, sliding update after a batch, for every class c present in ``labels``:
    ``mu_c = norm(mean_{i: y_i = c} v_i)``, ``p_c <- norm(gamma * p_c + (1 - gamma) * mu_c)``;
    rows of absent classes are returned unchanged. Pure: returns a new detached tensor.

    Args:
        prototypes: (C, d) current prototypes.
        features: (N, d) the batch's student image features v_i (detached here; each row normalised).
        labels: (N,) int64 in [0, C).
        gamma: sliding coefficient in [0, 1]; 1 keeps the prototypes, 0 replaces them by the batch means.
    Returns:
        (C, d) updated prototypes.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1]; got {gamma}")
    old = prototypes.detach()
    sums, counts = _class_sums(features.to(old.dtype), labels, old.shape[0])
    mu = F.normalize(sums, dim=-1)
    updated = F.normalize(gamma * old + (1.0 - gamma) * mu, dim=-1)
    return torch.where((counts > 0)[:, None], updated, old)
