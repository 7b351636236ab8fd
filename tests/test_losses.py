"""Tests of pipeline.losses: registry, CLIP losses, and the dual-teacher L_con / L_dis (spec step 4)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss

from pipeline.losses import (
    LOSSES,
    adaptive_teacher_weights,
    clip_ce,
    clip_contrastive,
    dual_teacher_distillation,
    get_loss,
    prototype_contrastive,
    register_loss,
    similarity_distillation,
)

from tensors import f64, randn


def unit(angle_deg: float, scale: float = 1.0) -> list[float]:
    a = math.radians(angle_deg)
    return [scale * math.cos(a), scale * math.sin(a)]


# ---------------------------------------------------------------- registry
def test_registry_names_and_lookup():
    expected = {
        "clip_ce": clip_ce,
        "clip_contrastive": clip_contrastive,
        "prototype_contrastive": prototype_contrastive,
        "similarity_distillation": similarity_distillation,
        "dual_teacher_distillation": dual_teacher_distillation,
    }
    for name, fn in expected.items():
        assert LOSSES[name] is fn
        assert get_loss(name) is fn


def test_registry_unknown_name_lists_known():
    with pytest.raises(ValueError, match="no_such_loss") as info:
        get_loss("no_such_loss")
    assert "clip_ce" in str(info.value) and "dual_teacher_distillation" in str(info.value)


def test_registry_rejects_duplicate():
    with pytest.raises(ValueError, match="clip_ce"):
        register_loss("clip_ce")(lambda: None)
    assert LOSSES["clip_ce"] is clip_ce


# ---------------------------------------------------------------- clip_ce
def test_clip_ce_equals_cross_entropy_on_hand_logits():
    # Texts at 0 and 90 degrees, images at 30 and 120 degrees (scaled: normalised inside), s = 10.
    # cos(30-0)=cos30, cos(30-90)=cos60 ; cos(120-0)=cos120, cos(120-90)=cos30.
    v = torch.tensor([unit(30, 3.0), unit(120, 0.5)], dtype=f64)
    u = torch.tensor([unit(0, 2.0), unit(90, 7.0)], dtype=f64)
    y = torch.tensor([0, 1])
    c30, c60, c120 = math.cos(math.radians(30)), math.cos(math.radians(60)), math.cos(math.radians(120))
    logits = 10.0 * torch.tensor([[c30, c60], [c120, c30]], dtype=f64)
    expected = F.cross_entropy(logits, y)
    # And by hand: sample 0: log(e^{10c30}+e^{10c60}) - 10c30 ; sample 1: log(e^{10c120}+e^{10c30}) - 10c30.
    by_hand = (
        math.log(math.exp(10 * c30) + math.exp(10 * c60)) - 10 * c30
        + math.log(math.exp(10 * c120) + math.exp(10 * c30)) - 10 * c30
    ) / 2
    got = clip_ce(v, u, y, logit_scale=math.log(10.0))
    assert torch.allclose(got, expected) and math.isclose(got.item(), by_hand, rel_tol=1e-12)
    smoothed = clip_ce(v, u, y, logit_scale=torch.tensor(math.log(10.0), dtype=f64), label_smoothing=0.2)
    assert torch.allclose(smoothed, F.cross_entropy(logits, y, label_smoothing=0.2))
    assert not torch.allclose(smoothed, expected)


def test_clip_ce_logit_scale_gets_no_gradient():
    v, u = randn(5, 8, seed=1, requires_grad=True), randn(3, 8, seed=2, requires_grad=True)
    logit_scale = torch.tensor(math.log(100.0), dtype=f64, requires_grad=True)
    loss = clip_ce(v, u, torch.tensor([0, 1, 2, 1, 0]), logit_scale)
    assert torch.isfinite(loss)
    loss.backward()
    assert logit_scale.grad is None
    assert v.grad is not None and v.grad.abs().sum() > 0 and u.grad.abs().sum() > 0


def test_clip_ce_gradcheck():
    v, u = randn(4, 3, seed=3, requires_grad=True), randn(3, 3, seed=4, requires_grad=True)
    y = torch.tensor([0, 2, 1, 2])
    assert torch.autograd.gradcheck(lambda a, b: clip_ce(a, b, y, 1.5, label_smoothing=0.1), (v, u))


# ---------------------------------------------------------------- clip_contrastive
def test_clip_contrastive_matches_open_clip():
    v = F.normalize(randn(6, 16, seed=5, dtype=torch.float32), dim=-1)
    u = F.normalize(randn(6, 16, seed=6, dtype=torch.float32), dim=-1)
    ls_ours = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ls_ref = torch.tensor(math.log(1 / 0.07), requires_grad=True)
    ours = clip_contrastive(v, u, ls_ours)
    ref = ClipLoss()(v, u, ls_ref.exp())  # open_clip takes the exponentiated scale
    assert torch.allclose(ours, ref, atol=1e-6)
    ours.backward()
    ref.backward()
    # logit_scale is learned in pretraining: it must receive the same gradient as in open_clip.
    assert ls_ours.grad is not None and ls_ours.grad.abs() > 0
    assert torch.allclose(ls_ours.grad, ls_ref.grad, atol=1e-6)


def test_clip_contrastive_lower_for_matched_pairs():
    v = randn(6, 16, seed=7)
    u = v + 0.1 * randn(6, 16, seed=8)
    matched = clip_contrastive(v, u, math.log(20.0))
    shuffled = clip_contrastive(v, u.roll(1, dims=0), math.log(20.0))
    assert torch.isfinite(matched) and matched < shuffled


def test_clip_contrastive_gradcheck():
    v, u = randn(4, 3, seed=9, requires_grad=True), randn(4, 3, seed=10, requires_grad=True)
    ls = torch.tensor(0.7, dtype=f64, requires_grad=True)
    assert torch.autograd.gradcheck(clip_contrastive, (v, u, ls))


# ---------------------------------------------------------------- L_con
def naive_prototype_contrastive(v, y, u, p, tau):
    """Triple loop straight from the spec's formula, in Python floats."""
    pool = [F.normalize(r, dim=0) for r in torch.cat([v, u, p]).detach()]
    lab = y.tolist() + list(range(len(u))) + list(range(len(p)))
    cos = lambda a, b: float(pool[a] @ pool[b])  # noqa: E731
    anchor_losses = []
    for c in sorted(set(y.tolist())):
        members = [i for i, l in enumerate(lab) if l == c]
        for h in members:
            denominator = sum(math.exp(cos(h, f) / tau) for f in range(len(pool)) if f != h)
            terms = [math.log(math.exp(cos(h, g) / tau) / denominator) for g in members if g != h]
            anchor_losses.append(-sum(terms) / len(terms))
    return sum(anchor_losses) / len(anchor_losses)


def test_prototype_contrastive_hand_case():
    # One image of class 0; two classes. t = 1/tau = 2.
    #   v0 = (0.6, 0.8) [label 0]   u0 = (1, 0) [0]   u1 = (0, 1) [1]   p0 = (1, 0) [0]   p1 = (-1, 0) [1]
    # Class 1 is absent from the batch: its members are negatives only, never anchors.
    # Anchor v0: cos to u0, u1, p0, p1 = 0.6, 0.8, 0.6, -0.6 ; positives u0, p0 (cos 0.6 each)
    #   l(v0) = log(2 e^{0.6t} + e^{0.8t} + e^{-0.6t}) - 0.6t
    # Anchor u0: cos to v0, u1, p0, p1 = 0.6, 0, 1, -1 ; positives v0 (0.6), p0 (1)
    #   l(u0) = log(e^{0.6t} + 1 + e^{t} + e^{-t}) - (0.6t + t)/2
    # Anchor p0: identical direction to u0, same cosines to the rest -> l(p0) = l(u0).
    # L_con = (l(v0) + 2 l(u0)) / 3
    t = 2.0
    l_v0 = math.log(2 * math.exp(0.6 * t) + math.exp(0.8 * t) + math.exp(-0.6 * t)) - 0.6 * t
    l_u0 = math.log(math.exp(0.6 * t) + 1 + math.exp(t) + math.exp(-t)) - 0.8 * t
    expected = (l_v0 + 2 * l_u0) / 3
    v = torch.tensor([[3.0, 4.0]], dtype=f64)  # (0.6, 0.8) * 5: normalised inside
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=f64)
    p = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=f64)
    got = prototype_contrastive(v, torch.tensor([0]), u, p, tau=0.5)
    assert math.isclose(got.item(), expected, rel_tol=1e-12)


def test_prototype_contrastive_matches_naive_reference():
    v, u, p = randn(9, 5, seed=11), randn(6, 5, seed=12), randn(6, 5, seed=13)
    y = torch.tensor([0, 3, 3, 1, 0, 3, 5, 1, 0])  # classes 2 and 4 absent, repeats present
    for tau in (0.07, 0.5):
        got = prototype_contrastive(v, y, u, p, tau=tau)
        assert math.isclose(got.item(), naive_prototype_contrastive(v, y, u, p, tau), rel_tol=1e-10)


def test_prototype_contrastive_lower_when_aligned():
    classes = F.normalize(randn(4, 16, seed=14), dim=-1)
    y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    v = classes[y] + 0.05 * randn(8, 16, seed=15)
    u = classes + 0.05 * randn(4, 16, seed=16)
    aligned = prototype_contrastive(v, y, u, classes)
    shuffled = prototype_contrastive(v, (y + 1) % 4, u, classes)  # every image under a wrong class
    assert torch.isfinite(aligned) and torch.isfinite(shuffled)
    assert aligned < shuffled


def test_prototype_contrastive_gradient_only_into_student():
    v, u = randn(5, 4, seed=17, requires_grad=True), randn(3, 4, seed=18, requires_grad=True)
    p = randn(3, 4, seed=19, requires_grad=True)
    prototype_contrastive(v, torch.tensor([0, 1, 1, 2, 0]), u, p).backward()
    assert p.grad is None or torch.all(p.grad == 0)
    assert torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0 and u.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [3, 7, -1])
def test_prototype_contrastive_rejects_a_label_outside_the_classes(bad):
    """A label >= C (or < 0) has no class text or prototype; it used to give NaN silently."""
    v, u, p = randn(4, 3, seed=23), randn(3, 3, seed=24), randn(3, 3, seed=25)
    with pytest.raises(ValueError, match=rf"label {bad} .*C = 3"):
        prototype_contrastive(v, torch.tensor([0, 2, bad, 1]), u, p)


def test_prototype_contrastive_gradcheck():
    v, u = randn(4, 3, seed=20, requires_grad=True), randn(3, 3, seed=21, requires_grad=True)
    p, y = randn(3, 3, seed=22), torch.tensor([0, 2, 2, 0])
    assert torch.autograd.gradcheck(lambda a, b: prototype_contrastive(a, y, b, p, tau=0.3), (v, u))


# ---------------------------------------------------------------- L_dis
def test_similarity_distillation_hand_case():
    # P = [(1,0), (cos60, sin60)] = [(1,0), (1/2, r3/2)], r3 = sqrt(3);
    # a unit row (x, y) gives S = (x, x/2 + r3 y/2).
    # Row 0: student (1,0) -> (1, 1/2);         teacher (0.6,0.8) -> (0.6, 0.3 + 0.4 r3)
    #        diff (0.4, 0.2 - 0.4 r3)
    # Row 1: student (0,1) -> (0, r3/2);        teacher (1,0) -> (1, 1/2)      diff (-1, r3/2 - 1/2)
    # Row 2: student = teacher = (-1,0)                                          diff (0, 0)
    # L = sqrt(0.4^2 + (0.2 - 0.4 r3)^2 + 1 + (r3/2 - 1/2)^2)   (Frobenius, not squared, not averaged)
    r3 = math.sqrt(3)
    row0 = 0.4**2 + (0.2 - 0.4 * r3) ** 2
    row1 = 1 + (r3 / 2 - 0.5) ** 2
    student = torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=f64)
    teacher = torch.tensor([[3.0, 4.0], [0.5, 0.0], [-3.0, 0.0]], dtype=f64)  # normalised inside
    p = torch.tensor([[1.0, 0.0], unit(60)], dtype=f64)
    got = similarity_distillation(student, teacher, p)
    assert math.isclose(got.item(), math.sqrt(row0 + row1), rel_tol=1e-12)
    # Row weights multiply the squared row norms: sqrt(w0 row0 + w1 row1 + w2 * 0).
    weights = torch.tensor([0.5, 2.0, 9.0], dtype=f64)
    weighted = similarity_distillation(student, teacher, p, row_weights=weights)
    assert math.isclose(weighted.item(), math.sqrt(0.5 * row0 + 2.0 * row1), rel_tol=1e-12)


def test_similarity_distillation_zero_with_finite_zero_gradient():
    h = randn(7, 5, seed=23, requires_grad=True)
    p = randn(3, 5, seed=24)
    for weights in (None, torch.rand(7, dtype=f64)):
        h.grad = None
        loss = similarity_distillation(h, h.detach().clone(), p, row_weights=weights)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(h.grad).all() and torch.all(h.grad == 0)


def test_dual_teacher_zero_with_finite_zero_gradient_when_student_is_e0():
    # First step of task 1: the student is E0.
    h = randn(7, 5, seed=25, requires_grad=True)
    loss = dual_teacher_distillation(h, randn(3, 5, seed=26), h.detach().clone())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(h.grad).all() and torch.all(h.grad == 0)


@pytest.mark.parametrize("weighting", ["mean", "adaptive"])
def test_seen_scope_zero_with_finite_zero_gradient_when_student_is_both_teachers(weighting):
    # loss.dis_scope "seen" on task m = 3 with C = (3, 2, 4) classes and B = 5 images: rows H = [V; U_1..U_3]
    # (5 + 9), columns P_all = [P_1; P_2; P_3] (9). At student == E0 == E_{m-1}, S == S_k for both teachers.
    v, u = randn(5, 6, seed=40), [randn(c, 6, seed=41 + c) for c in (3, 2, 4)]
    h = torch.cat([v, *u]).requires_grad_(True)
    p_all = torch.cat([randn(c, 6, seed=50 + c) for c in (3, 2, 4)])
    loss = dual_teacher_distillation(h, p_all, h.detach().clone(), h.detach().clone(), weighting=weighting)
    assert h.shape == (5 + 9, 6) and p_all.shape == (9, 6)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(h.grad).all() and torch.all(h.grad == 0)


@pytest.mark.parametrize("weighting", ["mean", "adaptive"])
def test_distillation_gradient_only_into_student(weighting):
    h = randn(6, 4, seed=27, requires_grad=True)
    p = randn(2, 4, seed=28, requires_grad=True)
    e0, prev = randn(6, 4, seed=29, requires_grad=True), randn(6, 4, seed=30, requires_grad=True)
    loss = dual_teacher_distillation(h, p, e0, prev, weighting=weighting)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    for constant in (p, e0, prev):
        assert constant.grad is None or torch.all(constant.grad == 0)
    assert h.grad.abs().sum() > 0
    p.grad = None
    h2 = randn(6, 4, seed=31, requires_grad=True)
    similarity_distillation(h2, e0, p).backward()
    assert p.grad is None and e0.grad is None


def test_dual_teacher_mean_and_first_task():
    h, p = randn(6, 4, seed=32), randn(3, 4, seed=33)
    e0, prev = randn(6, 4, seed=34), randn(6, 4, seed=35)
    l0, lprev = similarity_distillation(h, e0, p), similarity_distillation(h, prev, p)
    assert torch.equal(dual_teacher_distillation(h, p, e0), l0)
    assert torch.allclose(dual_teacher_distillation(h, p, e0, prev, weighting="mean"), (l0 + lprev) / 2)


def test_dual_teacher_unknown_weighting():
    h = randn(3, 2, seed=36)
    with pytest.raises(ValueError, match="'median'"):
        dual_teacher_distillation(h, h[:2], h, h, weighting="median")
    with pytest.raises(ValueError, match="'median'"):  # rejected on task 1 too, not only when used
        dual_teacher_distillation(h, h[:2], h, None, weighting="median")


def test_adaptive_weights_by_hand():
    # Row 0: teachers agree (distance 0) -> w = sigmoid(6 (0 - 0.2)) = 1 / (1 + e^{1.2}) < 0.5.
    # Row 1: opposite directions (distance 2) -> w = 1 / (1 + e^{-6 * 1.8}) > 0.5.
    e0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=f64)
    prev = torch.tensor([[5.0, 0.0], [0.0, -2.0]], dtype=f64)  # normalised inside
    w = adaptive_teacher_weights(e0, prev.requires_grad_())
    assert not w.requires_grad and w.shape == (2,)
    assert math.isclose(w[0].item(), 1 / (1 + math.exp(1.2)), rel_tol=1e-12) and w[0] < 0.5
    assert math.isclose(w[1].item(), 1 / (1 + math.exp(-6 * 1.8)), rel_tol=1e-12) and w[1] > 0.5


def test_adaptive_equals_mean_when_w_is_half():
    h, p = randn(6, 4, seed=37), randn(3, 4, seed=38)
    e0, prev = randn(6, 4, seed=39), randn(6, 4, seed=40)
    mean = dual_teacher_distillation(h, p, e0, prev, weighting="mean")
    # k = 0: sigmoid(0) = 0.5 exactly on every row.
    adaptive_k0 = dual_teacher_distillation(h, p, e0, prev, weighting="adaptive", k=0.0)
    assert torch.allclose(adaptive_k0, mean, rtol=1e-14)
    # Teachers exactly b apart on every row: prev = e0 rotated by theta in a plane,
    # |e0 - prev| = 2 sin(theta/2) = b.
    b = 0.2
    theta = 2 * math.asin(b / 2)
    e0_2d = torch.tensor([unit(a) for a in (10, 80, 200, 300)], dtype=f64)
    prev_2d = torch.tensor([unit(a + math.degrees(theta)) for a in (10, 80, 200, 300)], dtype=f64)
    h2, p2 = randn(4, 2, seed=41), randn(2, 2, seed=42)
    assert torch.allclose(adaptive_teacher_weights(e0_2d, prev_2d, b=b), torch.full((4,), 0.5, dtype=f64))
    assert torch.allclose(
        dual_teacher_distillation(h2, p2, e0_2d, prev_2d, weighting="adaptive", b=b),
        dual_teacher_distillation(h2, p2, e0_2d, prev_2d, weighting="mean"),
        rtol=1e-12,
    )


def test_adaptive_leans_on_e0_where_teachers_agree():
    # All rows at the same teacher distance d = 2 sin(delta/2), hence one weight w = sigmoid(6 (d - 0.2)).
    # Student == E0: L^E0 = 0, so adaptive = sqrt(2w) L^Eprev / 2 while mean = L^Eprev / 2.
    # Student == E_prev: L^Eprev = 0, so adaptive = sqrt(2(1 - w)) L^E0 / 2 while mean = L^E0 / 2.
    angles = (0, 70, 150, 250)
    p = torch.tensor([unit(20), unit(100)], dtype=f64)
    for delta_deg, teachers_agree in ((5.0, True), (90.0, False)):
        e0 = torch.tensor([unit(a) for a in angles], dtype=f64)
        prev = torch.tensor([unit(a + delta_deg) for a in angles], dtype=f64)
        d = 2 * math.sin(math.radians(delta_deg) / 2)
        w = 1 / (1 + math.exp(-6 * (d - 0.2)))
        assert (w < 0.5) == teachers_agree
        gap = similarity_distillation(e0, prev, p).item()  # = L^Eprev at student E0 = L^E0 at student E_prev
        for student, expected in ((e0, math.sqrt(2 * w) * gap / 2), (prev, math.sqrt(2 * (1 - w)) * gap / 2)):
            adaptive = dual_teacher_distillation(student.clone(), p, e0, prev, weighting="adaptive").item()
            mean = dual_teacher_distillation(student.clone(), p, e0, prev, weighting="mean").item()
            assert math.isclose(mean, gap / 2, rel_tol=1e-12)
            assert math.isclose(adaptive, expected, rel_tol=1e-10)
        # Where the teachers agree, a student at E_prev (away from E0) costs more than one at E0.
        at_e0 = dual_teacher_distillation(e0.clone(), p, e0, prev, weighting="adaptive")
        at_prev = dual_teacher_distillation(prev.clone(), p, e0, prev, weighting="adaptive")
        assert (at_prev > at_e0) == teachers_agree


def test_distillation_gradchecks():
    h = randn(5, 3, seed=43, requires_grad=True)
    p, e0, prev = randn(2, 3, seed=44), randn(5, 3, seed=45), randn(5, 3, seed=46)
    weights = torch.rand(5, dtype=f64)
    assert torch.autograd.gradcheck(lambda x: similarity_distillation(x, e0, p), (h,))
    assert torch.autograd.gradcheck(lambda x: similarity_distillation(x, e0, p, row_weights=weights), (h,))
    for weighting in ("mean", "adaptive"):
        assert torch.autograd.gradcheck(lambda x: dual_teacher_distillation(x, p, e0, prev, weighting), (h,))
    assert torch.autograd.gradcheck(lambda x: dual_teacher_distillation(x, p, e0), (h,))
