"""Losses of the dual-teacher prototype distillation method (docs/methods/dual_teacher.md, step 4).

Reconstruction of a 2024 Tianjin University patent; closest paper: MulKI (arXiv 2411.06764). The adaptive
teacher weighting follows "Select and Distill" (arXiv 2403.09296). All features are compared by cosine, so
every input is L2-normalised inside. Prototypes and teacher features are constants: detached inside.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.losses.registry import register_loss

TEACHER_WEIGHTINGS = ("mean", "adaptive")


@register_loss("prototype_contrastive")
def prototype_contrastive(
    image_features: Tensor,
    labels: Tensor,
    text_features: Tensor,
    prototypes: Tensor,
    tau: float = 0.07,
) -> Tensor:
    """L_con, cross-modal instance-prototype alignment (spec step 4; a supervised contrastive loss,
    Khosla et al. 2020, over images, class texts and prototypes).

    Pool A = [V; U; P] with labels [y; 0..C-1; 0..C-1]; H_c = members of A with label c. For every anchor
    h in H_c of a class c present in ``labels``:
        l(h) = - mean_{g in H_c, g != h} log( exp(cos(h,g)/tau) / sum_{f in A, f != h} exp(cos(h,f)/tau) )
    and L_con = mean over anchors of l(h).

    Args:
        image_features: (N, d) student image features V.
        labels: (N,) int64 in [0, C).
        text_features: (C, d) student text features U of the task's classes.
        prototypes: (C, d) class prototypes P (detached: buffers, no gradient).
        tau: temperature.
    Returns:
        scalar.
    Raises:
        ValueError: a label outside [0, C), naming it and C.
    """
    num_classes = text_features.shape[0]
    if prototypes.shape[0] != num_classes:
        raise ValueError(f"prototypes have {prototypes.shape[0]} rows, text_features {num_classes}")
    if labels.numel():
        # An out-of-range label has no class text or prototype, so its image may have no positive at all and
        # its anchor loss is 0 / 0 = NaN: fail loudly instead. One aminmax (and one sync) per call.
        low, high = (int(x) for x in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            bad = low if low < 0 else high
            raise ValueError(f"label {bad} is out of range for C = {num_classes} classes (labels must be in [0, C))")
    class_ids = torch.arange(num_classes, device=labels.device)
    pool = F.normalize(
        torch.cat([image_features, text_features, prototypes.detach().to(image_features.dtype)]), dim=-1
    )
    pool_labels = torch.cat([labels, class_ids, class_ids])
    # Anchors: members of classes present in the batch; only their rows of the similarity matrix are needed.
    anchor_idx = torch.isin(pool_labels, labels).nonzero().squeeze(1)
    logits = pool[anchor_idx] @ pool.T / tau  # (n_anchors, |A|)
    is_self = torch.zeros_like(logits, dtype=torch.bool)
    is_self[torch.arange(anchor_idx.numel(), device=logits.device), anchor_idx] = True
    # Denominator over A without the anchor itself.
    log_denominator = torch.logsumexp(logits.masked_fill(is_self, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_denominator
    positive = (pool_labels[anchor_idx, None] == pool_labels[None, :]) & ~is_self
    # Every anchor has >= 2 positives (its class text and prototype, or its image(s)), so no division by 0.
    per_anchor = -(log_prob * positive).sum(dim=1) / positive.sum(dim=1)
    return per_anchor.mean()


@register_loss("similarity_distillation")
def similarity_distillation(
    student_rows: Tensor,
    teacher_rows: Tensor,
    prototypes: Tensor,
    row_weights: Tensor | None = None,
) -> Tensor:
    """L_dis^k, instance-prototype similarity distillation from teacher k (spec step 4).

    S = cos(H, P), S_k = cos(H_k, P);  L_dis^k = ||S - S_k||_F  (plain Frobenius norm: not squared, not
    averaged). With ``row_weights`` w: sqrt(sum_i w_i ||S_i - S_k,i||^2) = ||diag(sqrt(w)) (S - S_k)||_F.
    The norm goes through torch.linalg.matrix_norm, whose gradient at S == S_k is 0 (a hand-written sqrt of
    a sum of squares would give NaN, and S == S_k holds exactly at the first step of task 1).

    Args:
        student_rows: (R, d) student rows H = [V; U] (R = N + C: batch images, then class texts).
        teacher_rows: (R, d) teacher k's rows H_k on the same images and prompts (detached: constants).
        prototypes: (C, d) prototypes P (detached).
        row_weights: optional (R,) non-negative weights on the squared row norms (detached: constants).
    Returns:
        scalar.
    """
    if student_rows.shape != teacher_rows.shape:
        raise ValueError(
            f"student rows {tuple(student_rows.shape)} != teacher rows {tuple(teacher_rows.shape)}"
        )
    dtype = student_rows.dtype
    p = F.normalize(prototypes.detach().to(dtype), dim=-1)
    s_student = F.normalize(student_rows, dim=-1) @ p.T
    s_teacher = F.normalize(teacher_rows.detach().to(dtype), dim=-1) @ p.T
    diff = s_student - s_teacher
    if row_weights is not None:
        # sqrt of the constant weights (no gradient through them, so sqrt(0) is harmless).
        diff = diff * row_weights.detach().to(dtype).sqrt()[:, None]
    return torch.linalg.matrix_norm(diff, ord="fro")


def adaptive_teacher_weights(e0_rows: Tensor, prev_rows: Tensor, k: float = 6.0, b: float = 0.2) -> Tensor:
    """Per-row weight of the previous-task teacher (Select and Distill, arXiv 2403.09296):
    w_i = sigmoid(k * (||f^E0_i - f^Eprev_i||_2 - b)). Rows on which the teachers disagree (distance > b)
    are attributed to the previous task's knowledge (w > 0.5); where they agree, E0 dominates (w < 0.5).

    Features are L2-normalised first (the spec's encoders emit normalised features; normalising here keeps
    b on the unit-sphere scale for raw encoder outputs too).

    Args:
        e0_rows, prev_rows: (R, d) features of E0 and E_{m-1} on the same rows.
    Returns:
        (R,) detached weights in (0, 1).
    """
    with torch.no_grad():
        distance = torch.linalg.vector_norm(
            F.normalize(e0_rows, dim=-1) - F.normalize(prev_rows, dim=-1), dim=-1
        )
        return torch.sigmoid(k * (distance - b))


@register_loss("dual_teacher_distillation")
def dual_teacher_distillation(
    student_rows: Tensor,
    prototypes: Tensor,
    e0_rows: Tensor,
    prev_rows: Tensor | None = None,
    weighting: str = "mean",
    k: float = 6.0,
    b: float = 0.2,
) -> Tensor:
    """L_dis of the spec (step 4) combining the teachers E0 and E_{m-1}.

    - task m = 1 (``prev_rows is None``): L_dis = L_dis^E0.
    - m >= 2, ``weighting="mean"``: L_dis = (L_dis^E0 + L_dis^Eprev) / 2.
    - m >= 2, ``weighting="adaptive"`` (project choice; the spec's variant from arXiv 2403.09296 adapted to a
      Frobenius-norm loss): with w = adaptive_teacher_weights(e0_rows, prev_rows, k, b),
          L_dis = ( L_dis^E0[row_weights = 2 (1 - w)] + L_dis^Eprev[row_weights = 2 w] ) / 2,
      the weights acting on squared row norms inside each norm. The factor 2 makes w == 0.5 everywhere
      reduce exactly to "mean".

    Args:
        student_rows: (R, d) student rows H = [V; U], R = N + C.
        prototypes: (C, d) prototypes P (detached).
        e0_rows: (R, d) E0's rows on the same images and prompts (detached).
        prev_rows: (R, d) E_{m-1}'s rows, or None on the first task (detached).
        weighting: "mean" or "adaptive".
        k, b: slope and offset of the adaptive sigmoid.
    Returns:
        scalar.
    """
    if weighting not in TEACHER_WEIGHTINGS:
        raise ValueError(f"unknown teacher weighting {weighting!r}; expected one of {TEACHER_WEIGHTINGS}")
    if prev_rows is None:
        return similarity_distillation(student_rows, e0_rows, prototypes)
    if weighting == "mean":
        return (
            similarity_distillation(student_rows, e0_rows, prototypes)
            + similarity_distillation(student_rows, prev_rows, prototypes)
        ) / 2
    w = adaptive_teacher_weights(e0_rows, prev_rows, k=k, b=b)
    return (
        similarity_distillation(student_rows, e0_rows, prototypes, row_weights=2 * (1 - w))
        + similarity_distillation(student_rows, prev_rows, prototypes, row_weights=2 * w)
    ) / 2
