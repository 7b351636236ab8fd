"""Losses of a cohort trained together (online distillation: DML, MCL): every network's cross entropy, and Deep
Mutual Learning's mimicry. Pure functions of the cohort's stacked logits (M, B, K)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.kd import knowledge_distillation
from pipeline.losses.registry import register_loss


def _check(logits: Tensor) -> int:
    if logits.ndim != 3 or len(logits) < 2:
        raise ValueError(f"a cohort's logits are (M >= 2, B, K); got {tuple(logits.shape)}")
    return len(logits)


@register_loss("cohort_ce")
def cohort_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """sum_a CE(z_a, y): each network learns the labels (the networks alone, and every online method's base)."""
    _check(logits)
    return sum(F.cross_entropy(z, labels) for z in logits)


@register_loss("mutual_learning")
def mutual_learning(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Deep Mutual Learning (Zhang et al., CVPR 2018): sum_a 1 / (M - 1) sum_{b != a} T^2 KL(p_b || p_a), each
    p_b detached (a target for network a only). 0 with a 0 gradient where every network predicts the same."""
    m = _check(logits)
    pairs = [(a, b) for a in range(m) for b in range(m) if a != b]
    return sum(knowledge_distillation(logits[a], logits[b], temperature) for a, b in pairs) / (m - 1)
