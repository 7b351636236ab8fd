"""The cohort's losses, MCL's (pipeline/losses/contrastive.py) and DML's (pipeline/losses/mutual.py), against
hand-computed values, a literal per-anchor reference, torch's kl_div, and the gradient properties the methods
rely on."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses.contrastive import (icl, lmcl_terms, mcl_terms, soft_alignment, soft_icl, soft_vcl, stage_pairs,
                                        sup_contrastive, vcl)
from pipeline.losses.kd import knowledge_distillation
from pipeline.losses.mutual import cohort_ce, mutual_learning

E1, E2 = [1.0, 0.0], [0.0, 1.0]
LABELS = torch.tensor([0, 0, 1])  # the third sample has no positive inside the batch: it is left out


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_vcl_hand_case():
    # S_aa (tau 1) = [[1,1,0],[1,1,0],[0,0,1]]; anchors 0 and 1: positive the other (1), denominator over j != i
    # = e^1 + e^0; anchor 2 has no positive.
    assert vcl(_t([E1, E1, E2]), LABELS, 1.0).item() == pytest.approx(math.log(1 + math.e) - 1, abs=1e-12)


def test_icl_hand_case_with_the_diagonal_masked_and_as_a_positive():
    v_a, v_b = _t([E1, E1, E2]), _t([E1, E2, E2])
    # S_ab rows: [1,0,0], [1,0,0], [0,1,1]
    masked = (math.log(2) + (math.log(1 + math.e) - 1)) / 2  # anchor 0: P {1}, A {1,2}; anchor 1: P {0}, A {0,2}
    positive = (2 * (math.log(math.e + 2) - 0.5) + math.log(1 + 2 * math.e) - 1) / 3  # P and A include i
    assert icl(v_a, v_b, LABELS, 1.0, "mask").item() == pytest.approx(masked, abs=1e-12)
    assert icl(v_a, v_b, LABELS, 1.0, "positive").item() == pytest.approx(positive, abs=1e-12)


def _literal(v_a, v_b, labels, tau, include_self, weight=None):
    """SupCon written anchor by anchor, positive by positive (each anchor's loss times its weight)."""
    losses = []
    for i in range(len(labels)):
        others = [j for j in range(len(labels)) if include_self or j != i]
        positives = [j for j in others if labels[j] == labels[i]]
        if not positives:
            continue
        log_z = math.log(sum(math.exp(float(v_a[i] @ v_b[j]) / tau) for j in others))
        w = 1.0 if weight is None else float(weight[i])
        losses.append(-w * sum(float(v_a[i] @ v_b[p]) / tau - log_z for p in positives) / len(positives))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("diagonal", ["mask", "positive"])
def test_against_a_literal_reference(diagonal):
    g = torch.Generator().manual_seed(0)
    v_a = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    v_b = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])  # label 3 once: that anchor is left out when masked
    ref = _literal(v_a, v_b, labels, 0.07, diagonal == "positive")
    assert icl(v_a, v_b, labels, 0.07, diagonal).item() == pytest.approx(ref, rel=1e-10)
    assert vcl(v_a, labels, 0.07).item() == pytest.approx(_literal(v_a, v_a, labels, 0.07, False), rel=1e-10)


def test_a_batch_without_any_positive_is_an_error():
    with pytest.raises(ValueError, match="no anchor"):
        sup_contrastive(torch.zeros(3, 3), torch.tensor([0, 1, 2]))


def _embeddings(seed, n=6, d=4):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def test_soft_terms_against_kl_div():
    v_a, v_b, tau, t = _embeddings(0), _embeddings(1), 0.07, 3.0

    def kl(s, target):
        return F.kl_div(F.log_softmax(s / t, dim=1), F.softmax(target / t, dim=1), reduction="batchmean") * t**2

    s_aa, s_bb, s_ab, s_ba = (x @ y.T / tau for x, y in [(v_a, v_a), (v_b, v_b), (v_a, v_b), (v_b, v_a)])
    assert soft_vcl(v_a, v_b, tau, t).item() == pytest.approx(kl(s_aa, s_bb).item(), rel=1e-10)
    assert soft_icl(v_a, v_b, tau, t).item() == pytest.approx((kl(s_ab, s_ba) + kl(s_ba, s_ab)).item(), rel=1e-10)


def test_soft_terms_give_no_gradient_into_their_targets():
    logits = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randn(5, 5, dtype=torch.float64, requires_grad=True)
    knowledge_distillation(logits, target, 3.0).backward()
    assert target.grad is None and logits.grad.abs().sum() > 0
    v_a, v_b = _embeddings(0).requires_grad_(), _embeddings(1).requires_grad_()
    soft_vcl(v_a, v_b, 0.1, 3.0).backward()  # network b's own distribution is the target
    assert v_b.grad is None and v_a.grad.abs().sum() > 0


def test_soft_terms_are_zero_with_zero_gradient_where_the_networks_agree():
    v = _embeddings(0)
    for fn in (soft_vcl, soft_icl):
        v_a = v.clone().requires_grad_()
        value = fn(v_a, v.clone(), 0.1, 3.0)
        value.backward()
        assert value.item() == 0.0 and torch.equal(v_a.grad, torch.zeros_like(v_a.grad))


def test_gradients_are_finite_when_embeddings_coincide():
    raw = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    raw[1] = raw[0]  # two images embedded the same, and both networks identical
    raw_a, raw_b = raw.clone().requires_grad_(), raw.clone().requires_grad_()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    terms = mcl_terms([F.normalize(raw_a, dim=1), F.normalize(raw_b, dim=1)], labels, 0.07, 3.0, "positive")
    sum(terms.values()).backward()
    assert all(torch.isfinite(t).all() for t in (raw_a.grad, raw_b.grad))
    assert all(torch.isfinite(v) for v in terms.values())


def test_a_cohort_of_three_sums_every_pair():
    vs, labels = [_embeddings(s) for s in range(3)], torch.tensor([0, 0, 1, 1, 2, 2])
    terms = mcl_terms(vs, labels, 0.1, 3.0, "mask")
    ordered = [(a, b) for a in range(3) for b in range(3) if a != b]
    assert terms["vcl"].item() == pytest.approx(sum(vcl(v, labels, 0.1).item() for v in vs))
    assert terms["icl"].item() == pytest.approx(sum(icl(vs[a], vs[b], labels, 0.1).item() for a, b in ordered))
    assert terms["soft_vcl"].item() == pytest.approx(sum(soft_vcl(vs[a], vs[b], 0.1, 3.0).item() for a, b in ordered))
    assert terms["soft_icl"].item() == pytest.approx(
        sum(soft_icl(vs[a], vs[b], 0.1, 3.0).item() for a, b in [(0, 1), (0, 2), (1, 2)]))
    with pytest.raises(ValueError, match="at least 2"):
        mcl_terms(vs[:1], labels, 0.1, 3.0)


def test_cohort_ce_is_each_networks_cross_entropy_summed():
    logits, labels = torch.randn(3, 5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    expected = sum(F.cross_entropy(z, labels) for z in logits)
    assert cohort_ce(logits, labels).item() == pytest.approx(expected.item(), rel=1e-12)


def test_mutual_learning_against_kl_div_with_each_target_detached():
    logits = torch.randn(3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    t = 2.0
    expected = sum(F.kl_div(F.log_softmax(logits[a] / t, 1), F.softmax(logits[b].detach() / t, 1), reduction="batchmean")
                   for a in range(3) for b in range(3) if a != b) * t**2 / 2
    value = mutual_learning(logits, t)
    assert value.item() == pytest.approx(expected.item(), rel=1e-10)
    # detached targets: network a's gradient is its own terms' only, T (softmax(z_a / T) - mean_{b != a} p_b) / B
    value.backward()
    p = (logits.detach() / t).softmax(-1)
    for a in range(3):
        others = (p.sum(0) - p[a]) / 2
        torch.testing.assert_close(logits.grad[a], (p[a] - others) * t / 5)


def test_mutual_learning_is_zero_with_zero_gradient_where_the_networks_agree():
    one = torch.randn(5, 4, dtype=torch.float64)
    logits = one.expand(3, 5, 4).clone().requires_grad_()
    value = mutual_learning(logits, 3.0)
    value.backward()
    assert value.item() == 0.0 and torch.equal(logits.grad, torch.zeros_like(logits.grad))


# Layer-wise MCL: the same terms, each anchor row weighted, over every pair of stages of two networks.

@pytest.mark.parametrize("diagonal", ["mask", "positive"])
def test_weighted_terms_against_a_literal_reference(diagonal):
    g = torch.Generator().manual_seed(1)
    v_a = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    v_b = F.normalize(torch.randn(8, 5, generator=g, dtype=torch.float64), dim=1)
    w = torch.rand(8, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3])
    ref = _literal(v_a, v_b, labels, 0.1, diagonal == "positive", w)
    assert icl(v_a, v_b, labels, 0.1, diagonal, w).item() == pytest.approx(ref, rel=1e-10)
    assert vcl(v_a, labels, 0.1, w).item() == pytest.approx(_literal(v_a, v_a, labels, 0.1, False, w), rel=1e-10)
    with pytest.raises(ValueError, match=r"per-anchor weight is \(8,\)"):
        vcl(v_a, labels, 0.1, w[:4])


def test_weighted_soft_alignment_against_kl_div():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 6, generator=g, dtype=torch.float64)
    w, temp = torch.rand(6, generator=g, dtype=torch.float64), 3.0
    rows = F.kl_div(F.log_softmax(s / temp, dim=1), F.softmax(t / temp, dim=1), reduction="none").sum(1)
    assert soft_alignment(s, t, temp, w).item() == pytest.approx(((w * rows).mean() * temp**2).item(), rel=1e-10)
    assert soft_alignment(s, t, temp, torch.ones(6, dtype=torch.float64)).item() == pytest.approx(
        knowledge_distillation(s, t, temp).item(), rel=1e-12)


def test_weighted_soft_terms_are_zero_with_zero_gradient_where_the_networks_agree_and_leave_targets_alone():
    v, w = _embeddings(0), torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for fn in (soft_vcl, soft_icl):
        v_a = v.clone().requires_grad_()
        value = fn(v_a, v.clone(), 0.1, 3.0, w)
        value.backward()
        assert value.item() == 0.0 and torch.equal(v_a.grad, torch.zeros_like(v_a.grad))
    v_a, v_b = _embeddings(0).requires_grad_(), _embeddings(1).requires_grad_()
    soft_vcl(v_a, v_b, 0.1, 3.0, w).backward()
    assert v_b.grad is None and v_a.grad.abs().sum() > 0


def test_stage_pairs_cover_every_stage_of_one_network_against_every_stage_of_another():
    assert stage_pairs([2, 1]) == [(0, 0, 1, 0), (0, 1, 1, 0)]
    assert len(stage_pairs([3, 3, 3])) == 3 * 9  # 3 pairs of networks, 3 x 3 stages each


def test_lmcl_terms_with_one_stage_and_unit_weights_are_mcls_for_a_pair():
    vs, labels = [_embeddings(s) for s in range(2)], torch.tensor([0, 0, 1, 1, 2, 2])
    ones = [torch.ones(6, dtype=torch.float64)]
    layerwise = lmcl_terms([[v] for v in vs], labels, 0.1, 3.0, ones, "positive")
    plain = mcl_terms(vs, labels, 0.1, 3.0, "positive")
    for key in plain:
        assert layerwise[key].item() == pytest.approx(plain[key].item(), rel=1e-12), key


def test_lmcl_terms_weight_each_pair_of_stages():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    stages = [[_embeddings(0), _embeddings(1)], [_embeddings(2)]]
    w = [torch.rand(6, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in (4, 5)]
    terms = lmcl_terms(stages, labels, 0.1, 3.0, w, "mask")
    v, u = stages[0], stages[1][0]
    assert terms["vcl"].item() == pytest.approx(sum(vcl(v[k], labels, 0.1, w[k]) + vcl(u, labels, 0.1, w[k])
                                                    for k in range(2)).item(), rel=1e-12)
    assert terms["icl"].item() == pytest.approx(sum(icl(v[k], u, labels, 0.1, "mask", w[k]) +
                                                    icl(u, v[k], labels, 0.1, "mask", w[k]) for k in range(2)).item())
    assert terms["soft_vcl"].item() == pytest.approx(sum(soft_vcl(v[k], u, 0.1, 3.0, w[k]) +
                                                         soft_vcl(u, v[k], 0.1, 3.0, w[k]) for k in range(2)).item())
    assert terms["soft_icl"].item() == pytest.approx(sum(soft_icl(v[k], u, 0.1, 3.0, w[k]) for k in range(2)).item())
    with pytest.raises(ValueError, match="2 pairs of stages need as many weights"):
        lmcl_terms(stages, labels, 0.1, 3.0, w[:1])
