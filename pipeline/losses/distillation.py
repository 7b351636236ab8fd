"""Losses of the distillation-token student (docs/methods/token.md, step 6).

DeiT (Touvron et al., ICML 2021, section 4, "soft" and "hard-label" distillation). ``z_s``: class-token
logits, ``z_d``: distillation-token logits, ``z_t``: teacher logits, all (B, K); ``labels``: (B,) int64 in
[0, K). Teacher logits are constants: detached inside, so the teacher never receives gradient.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.kd import softmax_kl
from pipeline.losses.registry import register_loss


@register_loss("soft_distillation")
def soft_distillation(z_s: Tensor, z_d: Tensor, z_t: Tensor, labels: Tensor, lam: float, tau: float) -> Tensor:
    """DeiT soft distillation (DeiT eq. 2; spec step 6):

        L = (1 - lam) * CE(z_s, y) + lam * tau^2 * KL(softmax(z_t / tau) || softmax(z_d / tau))

    i.e. ``F.kl_div(log_softmax(z_d / tau), softmax(z_t / tau), reduction="batchmean") * tau**2``: the
    teacher-to-student divergence (Hinton et al. 2015; what DeiT's code computes; the spec and the DeiT
    paper write the two arguments loosely as KL(z_d, z_t)). tau^2 keeps the gradient scale independent of tau.

    Reduction: per-sample ``batchmean`` (sum over the K classes, mean over the B samples). DeiT's code
    (losses.py, DistillationLoss) uses ``reduction="sum"`` divided by ``z_d.numel()`` = B x K instead, i.e.
    its KL term is this one divided by K; matching a DeiT-code run needs ``lam`` (or the term) scaled by 1/K.

    Args:
        z_s, z_d, z_t: (B, K) logits. labels: (B,) int64.
        lam: balance in [0, 1] (DeiT paper: 0.1; code default 0.5). tau: temperature > 0 (paper: 3).
    Returns:
        scalar.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    ce = F.cross_entropy(z_s, labels)
    kl = softmax_kl(z_d, z_t, tau).mean()  # batchmean; exactly 0, with a 0 gradient, at z_d == z_t
    return (1 - lam) * ce + lam * tau**2 * kl


@register_loss("hard_distillation")
def hard_distillation(z_s: Tensor, z_d: Tensor, z_t: Tensor, labels: Tensor) -> Tensor:
    """DeiT hard-label distillation (DeiT eq. 3; spec step 6):

        L = 0.5 * CE(z_s, y) + 0.5 * CE(z_d, argmax_k z_t)

    Args:
        z_s, z_d, z_t: (B, K) logits. labels: (B,) int64.
    Returns:
        scalar, each CE a mean over the batch.
    """
    y_t = z_t.detach().argmax(dim=-1)
    return 0.5 * F.cross_entropy(z_s, labels) + 0.5 * F.cross_entropy(z_d, y_t)


@register_loss("student_ce")
def student_ce(z_s: Tensor, z_d: Tensor, labels: Tensor) -> Tensor:
    """The same student trained without a teacher: ``0.5 * CE(z_s, y) + 0.5 * CE(z_d, y)``.

    DeiT's no-distillation baseline has no distillation token at all; here the architecture is kept fixed
    (same parameters, same fused inference) and both heads learn the true labels, so the comparison with
    soft / hard distillation isolates the teacher's signal.

    Args:
        z_s, z_d: (B, K) logits. labels: (B,) int64.
    Returns:
        scalar.
    """
    return 0.5 * F.cross_entropy(z_s, labels) + 0.5 * F.cross_entropy(z_d, labels)
