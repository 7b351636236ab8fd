"""Mutual contrastive learning's losses (docs/methods/mcl.md; Yang et al., AAAI 2022, TPAMI 2023): pure
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

Layer-wise MCL (L-MCL, TPAMI 2023) weights every term per anchor row: `weight` (B,), the meta-network's matching
weight of each image for the pair of stages (None: every row 1, MCL). A weighted term is the authors' code's
`(w_i * row_i).sum() / B` form: the mean over anchors of w_i times the row's loss.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from pipeline.losses.kd import knowledge_distillation, softmax_kl
from pipeline.losses.registry import register_loss

Diagonal = Literal["mask", "positive"]


def similarities(v_a: Tensor, v_b: Tensor, tau: float) -> Tensor:
    """S_ab = v^a (v^b)^T / tau: (B, B). The embeddings come L2-normalised (the projection head's output)."""
    if v_a.shape != v_b.shape:
        raise ValueError(f"embeddings of different shapes: {tuple(v_a.shape)} and {tuple(v_b.shape)}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0; got {tau}")
    return v_a @ v_b.T / tau


def sup_contrastive(logits: Tensor, labels: Tensor, diagonal: Diagonal = "mask", weight: Tensor | None = None) -> Tensor:
    """SupCon over a (B, B) similarity matrix `logits` (rows: anchors): the mean over anchors with at least one
    positive of  -w_i mean_{p in P(i)} [ logits_ip - log sum_{j in A(i)} exp(logits_ij) ]  (w_i = 1 without a
    `weight`).

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
    per_anchor = -log_prob.sum(1) / count.clamp(min=1)
    if weight is not None:
        per_anchor = per_anchor * _row_weight(weight, b)
    return per_anchor[has].mean()


def _row_weight(weight: Tensor, b: int) -> Tensor:
    if weight.shape != (b,):
        raise ValueError(f"a per-anchor weight is ({b},) for a batch of {b}; got {tuple(weight.shape)}")
    return weight


def soft_alignment(student: Tensor, target: Tensor, temperature: float, weight: Tensor | None = None) -> Tensor:
    """T^2 mean_i w_i KL(softmax(target_i / T) || softmax(student_i / T)), the target detached: Hinton's
    `knowledge_distillation` on similarity rows, each row weighted (w_i = 1 without a `weight`)."""
    if weight is None:
        return knowledge_distillation(student, target, temperature)
    kl = softmax_kl(student, target, temperature) * _row_weight(weight, student.shape[0])
    return kl.mean() * temperature**2


@register_loss("vcl")
def vcl(v_a: Tensor, labels: Tensor, tau: float, weight: Tensor | None = None) -> Tensor:
    """Vanilla contrastive loss inside network a: SupCon on S_aa, the anchor itself excluded."""
    return sup_contrastive(similarities(v_a, v_a, tau), labels, "mask", weight)


@register_loss("icl")
def icl(v_a: Tensor, v_b: Tensor, labels: Tensor, tau: float, diagonal: Diagonal = "mask",
        weight: Tensor | None = None) -> Tensor:
    """Interactive contrastive loss a -> b: anchors from network a, positives and negatives from network b."""
    return sup_contrastive(similarities(v_a, v_b, tau), labels, diagonal, weight)


@register_loss("soft_vcl")
def soft_vcl(v_a: Tensor, v_b: Tensor, tau: float, temperature: float, weight: Tensor | None = None) -> Tensor:
    """Network a's contrastive distribution softmax(S_aa / T) towards network b's softmax(S_bb / T) (detached)."""
    return soft_alignment(similarities(v_a, v_a, tau), similarities(v_b, v_b, tau), temperature, weight)


@register_loss("soft_icl")
def soft_icl(v_a: Tensor, v_b: Tensor, tau: float, temperature: float, weight: Tensor | None = None) -> Tensor:
    """Both directions between the cross-network distributions: softmax(S_ab / T) towards softmax(S_ba / T) and
    back, each target detached."""
    s_ab, s_ba = similarities(v_a, v_b, tau), similarities(v_b, v_a, tau)
    return soft_alignment(s_ab, s_ba, temperature, weight) + soft_alignment(s_ba, s_ab, temperature, weight)


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


def stage_pairs(stages: list[int]) -> list[tuple[int, int, int, int]]:
    """Every pair of stages of two different networks, (a, k, b, z) with a < b: stage k of network a, stage z of
    network b (`stages[a]`: network a's number of stages), in the order the matching weights come in."""
    m = len(stages)
    return [(a, k, b, z) for a in range(m) for b in range(a + 1, m) for k in range(stages[a]) for z in range(stages[b])]


def lmcl_terms(embeddings: list[list[Tensor]], labels: Tensor, tau: float, temperature: float,
               weights: list[Tensor], diagonal: Diagonal = "mask") -> dict[str, Tensor]:
    """Layer-wise MCL's four terms: for every pair of stages (a, k, b, z) of `stage_pairs` with its matching
    weight w (B,): VCL of both stages' embeddings, ICL both ways, soft VCL both ways, soft ICL (both ways inside),
    each row weighted by w; summed over the pairs.

    `embeddings[a][k]`: stage k of network a, (B, d) L2-normalised. With one stage per network and unit weights
    this is `mcl_terms` for a pair of networks. The authors' code (cifar_sup_layer_mcl_meta_loss.py) visits
    each pair in both orders, (a, b) and (b, a), with the same (symmetric) weight: every term twice this, which
    `cohort.lmcl`'s defaults (alpha..lam twice the README's) reproduce."""
    if len(embeddings) < 2:
        raise ValueError(f"layer-wise MCL needs a cohort of at least 2 networks; got {len(embeddings)}")
    pairs = stage_pairs([len(e) for e in embeddings])
    if len(weights) != len(pairs):
        raise ValueError(f"{len(pairs)} pairs of stages need as many weights; got {len(weights)}")
    terms = {"vcl": 0.0, "icl": 0.0, "soft_vcl": 0.0, "soft_icl": 0.0}
    for (a, k, b, z), w in zip(pairs, weights):
        v, u = embeddings[a][k], embeddings[b][z]
        terms["vcl"] = terms["vcl"] + vcl(v, labels, tau, w) + vcl(u, labels, tau, w)
        terms["icl"] = terms["icl"] + icl(v, u, labels, tau, diagonal, w) + icl(u, v, labels, tau, diagonal, w)
        terms["soft_vcl"] = terms["soft_vcl"] + soft_vcl(v, u, tau, temperature, w) + soft_vcl(u, v, tau, temperature, w)
        terms["soft_icl"] = terms["soft_icl"] + soft_icl(v, u, tau, temperature, w)
    return terms
