"""Logit distillation losses of the continual baselines: LwF, LwM's L_D and ZSCL's image-text distillation.

Every loss here is a pure function of logits; the teacher's logits are constants (detached inside). Logits of
a CLIP model are scaled cosines ``s * cos(v, u)`` (``cosine_logits``), as in ``clip_ce``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.clip import _as_scale
from pipeline.losses.registry import register_loss

LWM_FORMS = ("sigmoid", "bce", "softmax")


def cosine_logits(image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP's classifier logits ``z_ic = s * cos(v_i, u_c)`` with ``s = exp(logit_scale)`` (Radford et al.,
    2021): the same logits clip_ce takes the cross entropy of.

    Args:
        image_features: (N, d) image features (normalised here).
        text_features: (C, d) text features, one row per class or caption (normalised here).
        logit_scale: scalar *log* scale (``model.logit_scale``); detached, since it is frozen during
            continual learning.
    Returns:
        (N, C) logits.
    """
    if isinstance(logit_scale, Tensor):
        logit_scale = logit_scale.detach()
    scale = _as_scale(logit_scale, image_features)
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def softmax_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Per-row ``KL( softmax(t / T) || softmax(s / T) )``, the teacher a constant, written as

        KL = sum_c p_c (t_c - s_c) / T + lse(s / T) - lse(t / T),   p = exp(t / T - lse(t / T)),

    (exact algebra, since sum_c p_c = 1) rather than through ``F.kl_div(log_softmax, ...)``. Why: the gradient in
    s is then ``(softmax(s / T) - p) / T`` with both terms computed by the same operations (torch's logsumexp
    backward is ``exp(x - lse(x))``), so it is exactly 0 where s == t, the minimum; kl_div's gradient there is
    ``p_s * sum(p_t) - p_t``, a rounding error of about 1e-17 instead.

    Args:
        student_logits: (N, C) s. teacher_logits: (N, C) t (detached here). temperature: T > 0.
    Returns:
        (N,) the divergence of each row (not scaled by T^2).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} != teacher {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    s = student_logits / temperature
    t = teacher_logits.detach().to(student_logits.dtype) / temperature
    lse_t = torch.logsumexp(t, dim=-1, keepdim=True)
    p = torch.exp(t - lse_t)
    return (p * (t - s)).sum(dim=-1) + torch.logsumexp(s, dim=-1) - lse_t.squeeze(-1)


@register_loss("knowledge_distillation")
def knowledge_distillation(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """Softmax knowledge distillation at temperature T (Hinton et al., 2015), LwF's L_old (Li & Hoiem,
    "Learning without Forgetting", TPAMI 2017, Sec. 3, with T = 2):

        L_kd = T^2 * mean_i KL( softmax(t_i / T) || softmax(s_i / T) ).

    LwF writes L_old as the cross entropy -sum_c p_t log p_s; the KL differs from it by the teacher's entropy,
    a constant, so both give the same gradient, and the KL is 0 at student == teacher (value and gradient
    exactly: ``softmax_kl``). The T^2 factor keeps the gradient's magnitude independent of T (Hinton et al.,
    Sec. 2). Equal to ``F.kl_div(F.log_softmax(s / T), F.softmax(t / T), reduction="batchmean") * T**2``.

    Args:
        student_logits: (N, C) student logits s.
        teacher_logits: (N, C) teacher logits t over the same classes (detached: constants).
        temperature: T > 0.
    Returns:
        scalar.
    """
    return softmax_kl(student_logits, teacher_logits, temperature).mean() * temperature**2


@register_loss("zscl_distillation")
def zscl_distillation(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 2.0) -> Tensor:
    """ZSCL's distillation on reference image-text pairs (Zheng et al., "Preventing Zero-Shot Transfer
    Degradation in Continual Learning of Vision-Language Models", ICCV 2023, "Distillation in Feature Space"):

        L_zscl = L_kd(s, t) + L_kd(s^T, t^T),

    the image->text direction over the rows of ``s = scale * V_ref U_ref^T`` and the text->image direction
    over its columns, each ``knowledge_distillation`` at the same T (ZSCL: T = 2 in both). The two directions
    are **summed**, not averaged: ZSCL's released code adds both with weight 1 (``--image_loss --text_loss``;
    its ``--weight_adjust`` halving is off in the paper's scripts), so ``zscl_weight`` means the same as there.

    Args:
        student_logits: (B_i, B_t) student image->text logits over the reference batch.
        teacher_logits: (B_i, B_t) E0's logits on the same images and texts (detached: constants).
        temperature: T > 0.
    Returns:
        scalar.
    """
    return knowledge_distillation(student_logits, teacher_logits, temperature) + knowledge_distillation(
        student_logits.T, teacher_logits.T, temperature
    )


@register_loss("weight_l2")
def weight_l2(weights: Tensor, reference: Tensor) -> Tensor:
    """ZSCL's L2 in parameter space (its published scripts' ``--l2 1``; mtil/src/models/helpers.py ``l2_loss``:
    ``F.mse_loss(param, param_ref, reduction="sum")`` over every parameter, the reference being the weights the
    task started from): ``sum_i (w_i - r_i)^2`` for one parameter tensor. The method sums it over parameters.

    Args:
        weights: a parameter tensor of the student, any shape.
        reference: the same parameter as the task started (detached: a constant), same shape.
    Returns:
        scalar.
    """
    return (weights - reference.detach()).pow(2).sum()


@register_loss("lwm_distillation")
def lwm_distillation(
    student_logits: Tensor, teacher_logits: Tensor, form: str = "sigmoid", temperature: float = 2.0
) -> Tensor:
    """L_D of LwM (Dhar et al., "Learning without Memorizing", CVPR 2019, Sec. 3;
    docs/methods/lwm.md, "Loss") over the base-class logits y (teacher M_{t-1}) and y_hat
    (student M_t):

    - ``sigmoid`` (the paper): ``-sum_i sigmoid(y_i) log sigmoid(y_hat_i)``. This is only the positive half of
      a binary cross entropy, so it is NOT minimal at y_hat == y: it keeps decreasing as y_hat grows (its
      gradient in y_hat_i is ``-sigmoid(y_i)(1 - sigmoid(y_hat_i)) < 0``). Kept as written in the paper.
    - ``bce``: ``-sum_i [p_i log q_i + (1 - p_i) log(1 - q_i)]``, p = sigmoid(y), q = sigmoid(y_hat) (BCE with
      logits against the teacher's sigmoid): minimal (zero gradient) at y_hat == y.
    - ``softmax``: ``knowledge_distillation`` at ``temperature`` (FACIL's LwM uses T = 2): 0 at y_hat == y.

    The sigmoid and bce forms sum over classes and average over the batch, as the paper's sum over i.

    Args:
        student_logits: (N, C_b) student base-class logits y_hat.
        teacher_logits: (N, C_b) teacher base-class logits y (detached: constants).
        form: "sigmoid" | "bce" | "softmax".
        temperature: T of the softmax form (unused otherwise).
    Returns:
        scalar.
    """
    if form not in LWM_FORMS:
        raise ValueError(f"unknown LwM distillation form {form!r}; expected one of {LWM_FORMS}")
    if form == "softmax":
        return knowledge_distillation(student_logits, teacher_logits, temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} != teacher {tuple(teacher_logits.shape)}")
    p = torch.sigmoid(teacher_logits.detach().to(student_logits.dtype))
    if form == "sigmoid":
        # log sigmoid via logsigmoid: finite for the large scaled-cosine logits of CLIP (|y| up to 100).
        per_sample = -(p * F.logsigmoid(student_logits)).sum(dim=-1)
    else:
        per_sample = F.binary_cross_entropy_with_logits(student_logits, p, reduction="none").sum(dim=-1)
    return per_sample.mean()

