"""Mutual contrastive learning's losses (spec/mutual_contrastive.md; Yang et al., AAAI 2022, TPAMI 2023): pure
functions of L2-normalised embeddings and labels, supervised and in-batch.

Notation: v^a (B, d), the embeddings of a batch by network a; S_ab = v^a (v^b)^T / tau (B x B), row i the
anchor v^a_i against every v^b_j. Each contrastive term is SupCon's form: for anchor i, minus the mean over its
positives p of log( exp(S_ip) / sum_{j in A(i)} exp(S_ij) ), averaged over the anchors that have a positive.

- VCL (inside network a, on S_aa): positives the other samples of i's class; A(i) every j != i.
- ICL (a -> b, on S_ab): the same, or with the same image embedded by b (j = i) a positive and in A(i)
  (`diagonal="positive"`, the paper's form; `"mask"`, the authors' code's).
- Soft VCL / soft ICL: T^2 KL between the rows' softmax at temperature T, the target detached: Hinton's
  `knowledge_distillation` on similarity rows instead of class logits (exactly 0, with a 0 gradient, where the
  two networks' rows agree).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pipeline.losses.kd import knowledge_distillation
from pipeline.losses.registry import register_loss

Diagonal = Literal["mask", "positive"]


def similarities(v_a: Tensor, v_b: Tensor, tau: float) -> Tensor:
    """S_ab = v^a (v^b)^T / tau: (B, B). The embeddings come L2-normalised (the projection head's output)."""
    if v_a.shape != v_b.shape:
        raise ValueError(f"embeddings of different shapes: {tuple(v_a.shape)} and {tuple(v_b.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    return v_a @ v_b.T / tau


def sup_contrastive(logits: Tensor, labels: Tensor, diagonal: Diagonal = "mask") -> Tensor:
    """SupCon over a (B, B) similarity matrix `logits` (rows: anchors): the mean over anchors with at least one
    positive of  -mean_{p in P(i)} [ logits_ip - log sum_{j in A(i)} exp(logits_ij) ].

    diagonal "mask": P(i) = {j != i : y_j = y_i}, A(i) = {j != i}; "positive": P(i) = {j : y_j = y_i} (i
    included), A(i) = every j. An anchor without a positive is left out (the batches are drawn so none is)."""
    b = logits.shape[0]
    if logits.shape != (b, b) or labels.shape != (b,):
        raise ValueError(f"logits {tuple(logits.shape)} must be (B, B) for labels {tuple(labels.shape)}")
    eye = torch.eye(b, dtype=torch.bool, device=logits.device)
    same = labels[:, None] == labels[None, :]
    if diagonal == "mask":
        positive, others = same & ~eye, ~eye
    elif diagonal == "positive":
        positive, others = same, torch.ones_like(eye)
    else:
        raise ValueError(f"diagonal must be 'mask' or 'positive'; got {diagonal!r}")
    log_z = torch.logsumexp(logits.masked_fill(~others, float("-inf")), dim=1, keepdim=True)
    log_prob = (logits - log_z).masked_fill(~positive, 0.0)  # masked before the sum: -inf never meets a 0
    count = positive.sum(1)
    has = count > 0
    if not has.any():
        raise ValueError("no anchor in the batch has a positive (every label occurs once)")
    per_anchor = -log_prob.sum(1)[has] / count[has]
    return per_anchor.mean()


@register_loss("vcl")
def vcl(v_a: Tensor, labels: Tensor, tau: float) -> Tensor:
    """Vanilla contrastive loss inside network a: SupCon on S_aa, the anchor itself excluded."""
    return sup_contrastive(similarities(v_a, v_a, tau), labels, "mask")


@register_loss("icl")
def icl(v_a: Tensor, v_b: Tensor, labels: Tensor, tau: float, diagonal: Diagonal = "mask") -> Tensor:
    """Interactive contrastive loss a -> b: anchors from network a, positives and negatives from network b."""
    return sup_contrastive(similarities(v_a, v_b, tau), labels, diagonal)


@register_loss("soft_vcl")
def soft_vcl(v_a: Tensor, v_b: Tensor, tau: float, temperature: float) -> Tensor:
    """Network a's contrastive distribution softmax(S_aa / T) towards network b's softmax(S_bb / T) (detached)."""
    return knowledge_distillation(similarities(v_a, v_a, tau), similarities(v_b, v_b, tau), temperature)


@register_loss("soft_icl")
def soft_icl(v_a: Tensor, v_b: Tensor, tau: float, temperature: float) -> Tensor:
    """Both directions between the cross-network distributions: softmax(S_ab / T) towards softmax(S_ba / T) and
    back, each target detached."""
    s_ab, s_ba = similarities(v_a, v_b, tau), similarities(v_b, v_a, tau)
    return knowledge_distillation(s_ab, s_ba, temperature) + knowledge_distillation(s_ba, s_ab, temperature)


def mcl_terms(embeddings: list[Tensor], labels: Tensor, tau: float, temperature: float,
              diagonal: Diagonal = "mask") -> dict[str, Tensor]:
    """MCL's four terms over a cohort (each a sum, as in the authors' code): VCL over networks, ICL over ordered
    pairs a != b, soft VCL over ordered pairs, soft ICL over unordered pairs (both directions inside)."""
    m = len(embeddings)
    if m < 2:
        raise ValueError(f"mutual contrastive learning needs a cohort of at least 2 networks; got {m}")
    pairs = [(a, b) for a in range(m) for b in range(m) if a != b]
    return {
        "vcl": sum(vcl(v, labels, tau) for v in embeddings),
        "icl": sum(icl(embeddings[a], embeddings[b], labels, tau, diagonal) for a, b in pairs),
        "soft_vcl": sum(soft_vcl(embeddings[a], embeddings[b], tau, temperature) for a, b in pairs),
        "soft_icl": sum(soft_icl(embeddings[a], embeddings[b], tau, temperature) for a, b in pairs if a < b),
    }
