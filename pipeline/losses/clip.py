"""CLIP losses: classification over class-prompt text features, and CLIP's contrastive pretraining loss.

Features are normalised inside (the losses are defined on cosines), so callers may pass raw encoder outputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.registry import register_loss


def _as_scale(logit_scale: Tensor | float, like: Tensor) -> Tensor:
    """exp(logit_scale) as a tensor on ``like``'s device/dtype; keeps the autograd graph if it has one."""
    if not isinstance(logit_scale, Tensor):
        # Built directly in like's dtype: a float32 detour would cost precision in float64.
        return torch.tensor(float(logit_scale), device=like.device, dtype=like.dtype).exp()
    return logit_scale.to(device=like.device, dtype=like.dtype).exp()


@register_loss("clip_ce")
def clip_ce(
    image_features: Tensor,
    text_features: Tensor,
    labels: Tensor,
    logit_scale: Tensor | float,
    label_smoothing: float = 0.0,
) -> Tensor:
    """L_ce of the dual-teacher spec (step 4): cross entropy of ``z_ic = s * cos(v_i, u_c)``.

    As in ZSCL (Zheng et al., ICCV 2023) fine-tuning of CLIP (Radford et al., 2021): the classifier is the
    student's text features of the task's class prompts; ``s = exp(logit_scale)`` is frozen.

    Args:
        image_features: (N, d) student image features v_i (normalised here).
        text_features: (C, d) student text features u_c of the task's classes (normalised here).
        labels: (N,) int64 class indices in [0, C).
        logit_scale: scalar, the *log* scale as open_clip stores it (``model.logit_scale``). Detached here:
            the scale is frozen during continual learning, so it never receives gradient from this loss.
        label_smoothing: passed to ``F.cross_entropy`` (ZSCL uses 0.2).
    Returns:
        scalar mean over the batch.
    """
    if isinstance(logit_scale, Tensor):
        logit_scale = logit_scale.detach()
    scale = _as_scale(logit_scale, image_features)
    logits = scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


@register_loss("clip_contrastive")
def clip_contrastive(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """Symmetric InfoNCE of CLIP pretraining (Radford et al., 2021, Fig. 3 pseudo-code): row i of each
    input is a matching image-caption pair, every other row of the batch is a negative.

    ``loss = (CE(s * V U^T, arange) + CE(s * U V^T, arange)) / 2`` with ``s = exp(logit_scale)``; equal to
    ``open_clip.loss.ClipLoss()(V, U, s)`` on normalised inputs (single process).

    Args:
        image_features: (N, d) image features (normalised here).
        text_features: (N, d) features of the paired captions (normalised here).
        logit_scale: scalar *log* scale; unlike clip_ce it receives gradient (learned in pretraining).
    Returns:
        scalar.
    """
    scale = _as_scale(logit_scale, image_features)
    logits_per_image = scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_image.T, targets)) / 2
