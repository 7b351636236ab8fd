"""Top-1 accuracy, the one accuracy function of both branches, and accuracy matrix -> Transfer / Average / Last
(MTIL protocol of ZSCL, ICCV 2023; docs/methods/dual_teacher.md).

The matrix A has T + 1 rows and T columns: row 0 is E0 zero-shot, row j the model after task j, column i
task i (both in training order), entries in percent."""
from __future__ import annotations

import numpy as np


def top1(scores, labels) -> float:
    """Top-1 accuracy in percent of (N, K) scores (logits or probabilities) against (N,) labels, in double
    precision, rounded to 4 decimals (the metrics files' precision)."""
    return round(100.0 * (scores.argmax(dim=1) == labels).double().mean().item(), 4)


def per_class_top1(scores, labels, classes: list[str]) -> dict[str, float]:
    """Top-1 accuracy of each class in percent (a class without test images is left out: no NaN)."""
    hits = scores.argmax(dim=1) == labels
    return {name: round(100.0 * hits[labels == k].double().mean().item(), 4)
            for k, name in enumerate(classes) if bool((labels == k).any())}


def _check(matrix: np.ndarray) -> np.ndarray:
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] + 1:
        raise ValueError(f"accuracy matrix must be (T + 1) x T, got {a.shape}")
    return a


def transfer(matrix) -> float:
    """Mean over tasks i = 2..T of the mean over models j = 1..i-1 of A[j, i]: zero-shot accuracy on tasks
    not learned yet. NaN for a single task (no such entry)."""
    a = _check(matrix)
    t = a.shape[1]
    per_task = [a[1:i, i - 1].mean() for i in range(2, t + 1)]
    return float(np.mean(per_task)) if per_task else float("nan")


def average(matrix) -> float:
    """Mean over tasks i of the mean over all models j = 1..T of A[j, i]."""
    return float(_check(matrix)[1:].mean())


def last(matrix) -> float:
    """Mean over tasks of the final model's accuracy A[T, i]."""
    return float(_check(matrix)[-1].mean())


def zero_shot_transfer(row0) -> float:
    """E0's Transfer: its zero-shot accuracy on tasks 2..T (the same columns Transfer averages)."""
    row0 = np.asarray(row0, dtype=np.float64)
    return float(row0[1:].mean()) if len(row0) > 1 else float("nan")


def summary(matrix, digits: int = 4) -> dict[str, float]:
    return {k: round(f(matrix), digits) for k, f in (("transfer", transfer), ("average", average), ("last", last))}
