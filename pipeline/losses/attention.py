"""Attention distillation of LwM (Dhar et al., "Learning without Memorizing", CVPR 2019, Sec. 3;
docs/methods/lwm.md, "Loss"): Grad-CAM maps and the L1 distance between normalised maps.

Pure functions of tensors: the feature map A and the gradient dy_b/dA are computed by the caller (see
pipeline/continual/gradcam.py), which decides whether the gradient carries a graph (student) or not (teacher).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.registry import register_loss


def grad_cam(feature_map: Tensor, gradients: Tensor, eps: float = 1e-12) -> Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017, Eqs. 1-2) as LwM uses it, vectorised and L2-normalised:

        alpha_k = mean_ij dy_b / dA_k,ij,   Q = ReLU(sum_k alpha_k A_k),   Q_hat = vec(Q) / ||vec(Q)||_2.

    A map that ReLU zeroes everywhere stays the zero vector (``eps`` guards the division; F.normalize's
    clamped norm also keeps the gradient finite there). The result is differentiable in both inputs, so a
    ``gradients`` tensor built with ``create_graph=True`` lets a loss on Q_hat train the network.

    Args:
        feature_map: (B, K, H, W) feature map A (a CNN's last conv map, or a ViT's patch tokens on their grid).
        gradients: (B, K, H, W) dy_b/dA for each sample's class b.
        eps: lower bound on the norm.
    Returns:
        (B, H * W) maps Q_hat, non-negative, each of unit L2 norm or zero.
    """
    if feature_map.shape != gradients.shape or feature_map.ndim != 4:
        shapes = f"{tuple(feature_map.shape)} and {tuple(gradients.shape)}"
        raise ValueError(f"feature map and gradients must both be (B, K, H, W); got {shapes}")
    alpha = gradients.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): one weight per channel
    q = F.relu((alpha * feature_map).sum(dim=1))  # (B, H, W)
    return F.normalize(q.flatten(1), dim=1, eps=eps)


@register_loss("attention_distillation")
def attention_distillation(student_maps: Tensor, teacher_maps: Tensor) -> Tensor:
    """L_AD of LwM: ``mean_batch || Q_hat_{t-1} - Q_hat_t ||_1`` between the teacher's and the student's
    normalised Grad-CAM maps of the teacher's top base class.

    Args:
        student_maps: (B, P) student Q_hat (from ``grad_cam``; must carry a graph for L_AD to train anything).
        teacher_maps: (B, P) teacher Q_hat on the same images (detached: constants).
    Returns:
        scalar.
    """
    if student_maps.shape != teacher_maps.shape:
        raise ValueError(f"student maps {tuple(student_maps.shape)} != teacher maps {tuple(teacher_maps.shape)}")
    return (student_maps - teacher_maps.detach().to(student_maps.dtype)).abs().sum(dim=1).mean()
