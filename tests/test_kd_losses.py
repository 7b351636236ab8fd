"""Losses of the continual baselines (pipeline/losses/kd.py, attention.py): LwF / ZSCL KD, LwM's L_D forms,
Grad-CAM maps and L_AD. Hand-computed small cases, parity with torch references, and gradient checks."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.losses import (
    LOSSES,
    attention_distillation,
    cosine_logits,
    grad_cam,
    knowledge_distillation,
    lwm_distillation,
    weight_l2,
    zscl_distillation,
)

from tensors import f64, randn

LN3 = math.log(3.0)


def reference_kd(s, t, T):
    return F.kl_div(F.log_softmax(s / T, dim=-1), F.softmax(t / T, dim=-1), reduction="batchmean") * T**2


# Teacher t and student s of the hand cases, T = 2, so that the tempered probabilities are simple:
#   t / 2 rows: [0, ln3] -> p = [1/4, 3/4];   [0, 0]   -> p = [1/2, 1/2]
#   s / 2 rows: [0, 0]   -> q = [1/2, 1/2];   [0, ln3] -> q = [1/4, 3/4]
T_HAND = torch.tensor([[0.0, 2 * LN3], [0.0, 0.0]], dtype=f64)
S_HAND = torch.tensor([[0.0, 0.0], [0.0, 2 * LN3]], dtype=f64)


def test_registered_names():
    for name, fn in {
        "knowledge_distillation": knowledge_distillation,
        "zscl_distillation": zscl_distillation,
        "lwm_distillation": lwm_distillation,
        "attention_distillation": attention_distillation,
    }.items():
        assert LOSSES[name] is fn


def test_kd_hand_case_2x2():
    # Row 1: KL(p||q) = 1/4 ln(1/4 / 1/2) + 3/4 ln(3/4 / 1/2) = -1/4 ln2 + 3/4 (ln3 - ln2)
    # Row 2: KL(p||q) = 1/2 ln(1/2 / 1/4) + 1/2 ln(1/2 / 3/4) =  1/2 ln2 + 1/2 (ln2 - ln3)
    # Sum = 1/4 ln3 (the ln2 terms cancel); batchmean = 1/8 ln3; times T^2 = 4: 1/2 ln3 = 0.5493...
    got = knowledge_distillation(S_HAND, T_HAND, temperature=2.0)
    assert math.isclose(got.item(), 0.5 * LN3, rel_tol=1e-12)
    assert torch.allclose(got, reference_kd(S_HAND, T_HAND, 2.0))


@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 4.0])
def test_kd_matches_kl_div_reference(T):
    s, t = randn(5, 7, seed=1) * 3, randn(5, 7, seed=2) * 3
    torch.testing.assert_close(knowledge_distillation(s, t, T), reference_kd(s, t, T))


def test_kd_zero_at_student_equal_teacher_and_teacher_gets_no_gradient():
    t = randn(4, 6, seed=3)
    s = t.clone().requires_grad_(True)
    teacher = t.clone().requires_grad_(True)
    loss = knowledge_distillation(s, teacher, 2.0)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s)) and teacher.grad is None  # exactly; the teacher is a constant


def test_kd_gradcheck_float64():
    t = randn(3, 5, seed=4)
    assert torch.autograd.gradcheck(lambda s: knowledge_distillation(s, t, 2.0), (randn(3, 5, seed=5, requires_grad=True),))
    assert torch.autograd.gradcheck(lambda s: zscl_distillation(s, t[:, :3], 2.0), (randn(3, 3, seed=6, requires_grad=True),))


def test_kd_rejects_bad_inputs():
    with pytest.raises(ValueError, match="teacher"):
        knowledge_distillation(randn(2, 3), randn(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        knowledge_distillation(randn(2, 3), randn(2, 3), temperature=0.0)


def test_zscl_hand_case_2x2_sums_both_directions():
    # image->text (rows): 1/2 ln3, the KD hand case above.
    # text->image (columns): t^T / 2 rows [0, 0] -> [1/2, 1/2], [ln3, 0] -> [3/4, 1/4];
    #                        s^T / 2 rows [0, 0] -> [1/2, 1/2], [0, ln3] -> [1/4, 3/4].
    #   Row 1: KL = 0.  Row 2: 3/4 ln(3/4 / 1/4) + 1/4 ln(1/4 / 3/4) = 3/4 ln3 - 1/4 ln3 = 1/2 ln3.
    #   batchmean 1/4 ln3, times 4: ln3.   Sum of the directions: 1/2 ln3 + ln3 = 3/2 ln3 = 1.6479...
    got = zscl_distillation(S_HAND, T_HAND, temperature=2.0)
    assert math.isclose(got.item(), 1.5 * LN3, rel_tol=1e-12)
    expected = reference_kd(S_HAND, T_HAND, 2.0) + reference_kd(S_HAND.T, T_HAND.T, 2.0)
    assert torch.allclose(got, expected)


def test_weight_l2_hand_case_parity_and_gradient():
    # (1 - 0)^2 + (2 - 4)^2 + (-1 - -1)^2 + (0.5 - 0)^2 = 1 + 4 + 0 + 0.25 = 5.25
    w = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=f64, requires_grad=True)
    r = torch.tensor([[0.0, 4.0], [-1.0, 0.0]], dtype=f64, requires_grad=True)
    got = weight_l2(w, r)
    assert got.item() == 5.25
    torch.testing.assert_close(got, F.mse_loss(w, r, reduction="sum"))  # ZSCL's helpers.l2_loss, per parameter
    got.backward()
    torch.testing.assert_close(w.grad, 2 * (w - r).detach())  # d/dw = 2 (w - r); the reference is a constant
    assert r.grad is None
    assert torch.autograd.gradcheck(lambda x: weight_l2(x, r), (randn(2, 3, seed=9, requires_grad=True)[:, :2],))
    assert weight_l2(w, w).item() == 0.0


def test_zscl_parity_and_zero_at_equality():
    s, t = randn(6, 6, seed=7) * 5, randn(6, 6, seed=8) * 5
    expected = reference_kd(s, t, 2.0) + reference_kd(s.T, t.T, 2.0)
    torch.testing.assert_close(zscl_distillation(s, t, 2.0), expected)
    assert abs(zscl_distillation(t, t, 2.0).item()) < 1e-12


def test_cosine_logits_are_scaled_cosines_with_frozen_scale():
    v = torch.tensor([[3.0, 0.0]], dtype=f64)
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=f64)
    scale = torch.tensor(math.log(10.0), dtype=f64, requires_grad=True)
    got = cosine_logits(v, u, scale)
    torch.testing.assert_close(got, torch.tensor([[10.0, 0.0, -10 / math.sqrt(2)]], dtype=f64))
    assert not got.requires_grad  # the scale is detached: frozen during continual learning


# ---------------------------------------------------------------- LwM L_D forms
# Teacher y = [0, ln3] -> sigmoid p = [1/2, 3/4]; student y_hat = [0, -ln3] -> sigmoid q = [1/2, 1/4].
Y_TEACHER = torch.tensor([[0.0, LN3]], dtype=f64)
Y_STUDENT = torch.tensor([[0.0, -LN3]], dtype=f64)


def test_lwm_sigmoid_hand_case():
    # -(1/2 ln(1/2) + 3/4 ln(1/4)) = 1/2 ln2 + 3/2 ln2 = 2 ln2
    got = lwm_distillation(Y_STUDENT, Y_TEACHER, "sigmoid")
    assert math.isclose(got.item(), 2 * math.log(2.0), rel_tol=1e-12)


def test_lwm_bce_hand_case_and_reference():
    # class 1: -(1/2 ln 1/2 + 1/2 ln 1/2) = ln2; class 2: -(3/4 ln 1/4 + 1/4 ln 3/4) = 2 ln2 - 1/4 ln3
    got = lwm_distillation(Y_STUDENT, Y_TEACHER, "bce")
    assert math.isclose(got.item(), 3 * math.log(2.0) - 0.25 * LN3, rel_tol=1e-12)
    s, t = randn(4, 5, seed=9) * 4, randn(4, 5, seed=10) * 4
    reference = F.binary_cross_entropy_with_logits(s, torch.sigmoid(t), reduction="sum") / 4  # sum classes, mean batch
    torch.testing.assert_close(lwm_distillation(s, t, "bce"), reference)


def test_lwm_softmax_is_kd():
    s, t = randn(4, 5, seed=11), randn(4, 5, seed=12)
    torch.testing.assert_close(lwm_distillation(s, t, "softmax", temperature=3.0), reference_kd(s, t, 3.0))
    assert math.isclose(lwm_distillation(S_HAND, T_HAND, "softmax", 2.0).item(), 0.5 * LN3, rel_tol=1e-12)


@pytest.mark.parametrize("form", ["bce", "softmax"])
def test_lwm_forms_minimal_at_equality(form):
    t = randn(3, 4, seed=13) * 2
    s = t.clone().requires_grad_(True)
    at_teacher = lwm_distillation(s, t, form)
    at_teacher.backward()
    assert s.grad.abs().max() < 1e-12  # stationary point
    for seed in range(5):
        moved = t + 0.3 * randn(3, 4, seed=100 + seed)
        assert lwm_distillation(moved, t, form) > at_teacher


def test_lwm_sigmoid_form_is_not_minimal_at_equality():
    """The paper's form is only the positive half of a BCE: it always pushes the student's logits up."""
    t = randn(3, 4, seed=14)
    s = t.clone().requires_grad_(True)
    lwm_distillation(s, t, "sigmoid").backward()
    assert (s.grad < 0).all()
    assert lwm_distillation(t + 1.0, t, "sigmoid") < lwm_distillation(t, t, "sigmoid")


def test_lwm_forms_gradcheck_and_unknown_form():
    t = randn(3, 4, seed=15)
    for form in ("sigmoid", "bce", "softmax"):
        def loss(s, form=form):
            return lwm_distillation(s, t, form)

        assert torch.autograd.gradcheck(loss, (randn(3, 4, seed=16, requires_grad=True),))
    with pytest.raises(ValueError, match="nope"):
        lwm_distillation(t, t, "nope")


# ---------------------------------------------------------------- Grad-CAM and L_AD
def test_grad_cam_hand_case():
    # K = 2 channels on a 1x2 grid. Gradients: channel 0 mean 1, channel 1 mean -1 -> alpha = [1, -1].
    # sum_k alpha_k A_k = A_0 - A_1 = [3 - 0, 1 - 2] = [3, -1] -> ReLU [3, 0] -> normalised [1, 0].
    a = torch.tensor([[[[3.0, 1.0]], [[0.0, 2.0]]]], dtype=f64)
    g = torch.tensor([[[[2.0, 0.0]], [[-1.0, -1.0]]]], dtype=f64)
    torch.testing.assert_close(grad_cam(a, g), torch.tensor([[1.0, 0.0]], dtype=f64))


def test_grad_cam_maps_are_non_negative_and_unit_norm_or_zero():
    a, g = randn(16, 8, 3, 3, seed=17), randn(16, 8, 3, 3, seed=18)
    a[0], g[0] = a[0].abs() + 1.0, -torch.ones_like(g[0])  # positive A, negative alphas: ReLU zeroes the map
    q = grad_cam(a, g)
    assert q.shape == (16, 9) and (q >= 0).all()
    norms = q.norm(dim=1)
    assert norms[0] == 0  # ReLU zeroed every cell: the map stays 0, no NaN
    nonzero = norms > 0
    torch.testing.assert_close(norms[nonzero], torch.ones_like(norms[nonzero]))
    assert nonzero.sum() >= 10


def test_grad_cam_gradient_is_finite_at_a_zero_map():
    a = (randn(1, 2, 2, 2, seed=19).abs() + 1).requires_grad_(True)
    g = torch.full((1, 2, 2, 2), -1.0, dtype=f64, requires_grad=True)  # alpha < 0 on a positive A: Q = 0
    grad_cam(a, g).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(g.grad).all()


def test_attention_distillation_l1_and_properties():
    qt = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=f64)
    qs = torch.tensor([[0.0, 1.0], [0.8, 0.6]], dtype=f64, requires_grad=True)
    # |1-0| + |0-1| = 2 ; |0.6-0.8| + |0.8-0.6| = 0.4 ; mean = 1.2
    loss = attention_distillation(qs, qt)
    assert math.isclose(loss.item(), 1.2, rel_tol=1e-12)
    loss.backward()
    assert qs.grad is not None
    assert attention_distillation(qt, qt).item() == 0.0
    with pytest.raises(ValueError):
        attention_distillation(qt, qt[:, :1])
