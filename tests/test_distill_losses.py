"""Tests of pipeline.losses.distillation (spec step 6) and pipeline.compression.l2l (spec step 4,
learning-to-learn of the FT layers). Micro sizes."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.compression.l2l import learning_to_learn_step, split_classes
from pipeline.losses import LOSSES, hard_distillation, soft_distillation, student_ce
from pipeline.models.student import DistillationStudent, StudentConfig
from pipeline.models.student_blocks import ft_disabled

from tensors import f64, randn


def test_registered_names():
    assert LOSSES["soft_distillation"] is soft_distillation
    assert LOSSES["hard_distillation"] is hard_distillation
    assert LOSSES["student_ce"] is student_ce


# ---------------------------------------------------------------- soft distillation
@pytest.mark.parametrize("lam, tau", [(0.1, 3.0), (0.5, 1.0), (1.0, 0.5)])
def test_soft_matches_kl_div_batchmean_composition(lam, tau):
    z_s, z_d, z_t = randn(6, 7, seed=1), randn(6, 7, seed=2), 3 * randn(6, 7, seed=3)
    y = torch.tensor([0, 1, 2, 3, 4, 6])
    kl = F.kl_div(F.log_softmax(z_d / tau, dim=1), F.softmax(z_t / tau, dim=1), reduction="batchmean")
    expected = (1 - lam) * F.cross_entropy(z_s, y) + lam * tau**2 * kl
    assert torch.allclose(soft_distillation(z_s, z_d, z_t, y, lam, tau), expected, rtol=1e-12)


def test_soft_hand_computed_2x2():
    # tau = 2, lam = 0.25. softmax(z / 2) of [2 ln3, 0] is [3/4, 1/4]; of [0, 0] is [1/2, 1/2].
    #   sample 1: p_t = [3/4, 1/4], p_d = [1/2, 1/2]: KL1 = 3/4 ln(3/2) + 1/4 ln(1/2)
    #   sample 2: p_t = [1/2, 1/2], p_d = [1/4, 3/4]: KL2 = 1/2 ln 2 + 1/2 ln(2/3)
    #   batchmean KL = (KL1 + KL2) / 2 = (0.1308120 + 0.1438410) / 2 = 0.1373265
    # CE(z_s, y), z_s = [[0, 0], [ln3, 0]], y = [0, 1]: (ln 2 + ln 4) / 2 = 1.5 ln 2 = 1.0397208
    # L = 0.75 * 1.0397208 + 0.25 * 4 * 0.1373265 = 0.7797906 + 0.1373265 = 0.9171171
    ln3 = math.log(3)
    z_s = torch.tensor([[0.0, 0.0], [ln3, 0.0]], dtype=f64)
    z_d = torch.tensor([[0.0, 0.0], [0.0, 2 * ln3]], dtype=f64)
    z_t = torch.tensor([[2 * ln3, 0.0], [0.0, 0.0]], dtype=f64)
    y = torch.tensor([0, 1])
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    kl2 = 0.5 * math.log(2) + 0.5 * math.log(2 / 3)
    by_hand = 0.75 * 1.5 * math.log(2) + 0.25 * 4 * (kl1 + kl2) / 2
    got = soft_distillation(z_s, z_d, z_t, y, lam=0.25, tau=2.0).item()
    assert got == pytest.approx(by_hand, rel=1e-12) and got == pytest.approx(0.9171171, abs=1e-7)


def test_soft_is_ce_at_lam_0_and_kl_vanishes_when_dist_head_equals_teacher():
    z_s, z_d, z_t, y = randn(5, 4, seed=1), randn(5, 4, seed=2), randn(5, 4, seed=3), torch.tensor([0, 1, 2, 3, 0])
    ce = F.cross_entropy(z_s, y)
    assert torch.allclose(soft_distillation(z_s, z_d, z_t, y, lam=0.0, tau=3.0), ce, rtol=1e-12)
    assert soft_distillation(z_s, z_t, z_t, y, lam=1.0, tau=3.0).abs().item() < 1e-12
    assert torch.allclose(soft_distillation(z_s, z_t, z_t, y, lam=0.3, tau=3.0), 0.7 * ce, rtol=1e-12)
    assert soft_distillation(z_s, z_d, z_t, y, lam=1.0, tau=3.0).item() > 1e-3


def test_soft_relation_to_deit_code_reduction():
    # DeiT's code: kl_div(..., reduction="sum", log_target=True) * tau^2 / z_d.numel()  ==  ours / K.
    z_s, z_d, z_t, y, tau = randn(4, 6, seed=1), randn(4, 6, seed=2), randn(4, 6, seed=3), torch.zeros(4).long(), 2.0
    deit = F.kl_div(F.log_softmax(z_d / tau, 1), F.log_softmax(z_t / tau, 1), reduction="sum", log_target=True)
    deit = deit * tau * tau / z_d.numel()
    assert torch.allclose(soft_distillation(z_s, z_d, z_t, y, lam=1.0, tau=tau) / 6, deit, rtol=1e-12)


def test_soft_gradcheck_and_teacher_gets_no_gradient():
    z_s, z_d = randn(3, 4, seed=1, requires_grad=True), randn(3, 4, seed=2, requires_grad=True)
    z_t, y = randn(3, 4, seed=3, requires_grad=True), torch.tensor([1, 0, 3])
    assert torch.autograd.gradcheck(lambda a, b: soft_distillation(a, b, z_t, y, 0.4, 2.5), (z_s, z_d))
    soft_distillation(z_s, z_d, z_t, y, 0.4, 2.5).backward()
    assert z_t.grad is None
    assert z_s.grad.abs().sum() > 0 and z_d.grad.abs().sum() > 0


def test_soft_rejects_bad_lam_and_tau():
    z, y = randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="lam"):
        soft_distillation(z, z, z, y, lam=1.5, tau=1.0)
    with pytest.raises(ValueError, match="tau"):
        soft_distillation(z, z, z, y, lam=0.5, tau=0.0)


# ---------------------------------------------------------------- hard distillation, student_ce
def test_hard_uses_the_teachers_argmax_not_the_labels():
    z_s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=f64)
    z_d = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 3.0]], dtype=f64, requires_grad=True)
    z_t = torch.tensor([[0.0, 0.0, 5.0], [9.0, 1.0, 0.0]], dtype=f64, requires_grad=True)  # argmax [2, 0]
    y = torch.tensor([0, 1])  # differs from the teacher's argmax on both samples

    def ce(logits, target):  # -log softmax(logits)[target], by hand
        return math.log(sum(math.exp(v) for v in logits)) - logits[target]

    by_hand = 0.5 * (ce([1, 0, 0], 0) + ce([0, 2, 0], 1)) / 2 + 0.5 * (ce([0, 1, 0.5], 2) + ce([1, 0, 3], 0)) / 2
    loss = hard_distillation(z_s, z_d, z_t, y)
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    assert loss.item() != pytest.approx(student_ce(z_s, z_d, y).item(), rel=1e-3)
    loss.backward()
    assert z_t.grad is None and z_d.grad is not None


def test_student_ce_trains_both_heads_on_the_labels():
    z_s, z_d = randn(4, 5, seed=1, requires_grad=True), randn(4, 5, seed=2, requires_grad=True)
    y = torch.tensor([4, 3, 2, 1])
    loss = student_ce(z_s, z_d, y)
    assert torch.allclose(loss, (F.cross_entropy(z_s, y) + F.cross_entropy(z_d, y)) / 2, rtol=1e-12)
    loss.backward()
    assert z_s.grad.abs().sum() > 0 and z_d.grad.abs().sum() > 0


# ---------------------------------------------------------------- learning-to-learn
def student(ft_layers=True, seed=0) -> DistillationStudent:
    torch.manual_seed(seed)
    cfg = StudentConfig(image_size=4, patch_size=2, num_classes=4, d_model=8, n_layers=2, n_heads=2, d_ff=16,
                        attn_window=1, ft_layers=ft_layers, leff=True)
    return DistillationStudent(cfg).to(f64)


def batches():
    x_seen, x_unseen = randn(6, 3, 4, 4, seed=1), randn(6, 3, 4, 4, seed=2)
    return (x_seen, torch.tensor([0, 1, 2, 0, 1, 2])), (x_unseen, torch.tensor([3, 3, 3, 3, 3, 3]))


def loss_on(output, batch):
    return student_ce(*output, batch[1])


def optimizers(model, lr=0.1):
    return torch.optim.SGD(model.model_parameters(), lr=lr), torch.optim.SGD(model.ft_parameters(), lr=lr)


def test_l2l_theta_gradient_comes_only_through_the_look_ahead():
    seen, unseen = batches()
    # Without a look-ahead, the FT-off loss does not depend on theta at all.
    model = student().train()
    with ft_disabled(model):
        direct = torch.autograd.grad(loss_on(model(unseen[0]), unseen), model.ft_parameters(), allow_unused=True)
    assert all(g is None for g in direct)
    # Through the look-ahead: a non-zero gradient, which vanishes with the look-ahead (inner_lr = 0).
    for inner_lr, nonzero in ((0.5, True), (0.0, False)):
        model = student()
        before = [p.detach().clone() for p in model.ft_parameters()]
        out = learning_to_learn_step(model, loss_on, seen, unseen, inner_lr, *optimizers(model))
        assert set(out) == {"seen", "unseen"} and all(math.isfinite(v) for v in out.values())
        grads = [p.grad for p in model.ft_parameters()]
        assert any(g.abs().sum() > 0 for g in grads) == nonzero
        moved = any(not torch.equal(a, b) for a, b in zip(before, model.ft_parameters()))
        assert moved == nonzero


def test_l2l_model_weights_step_with_the_seen_loss_only():
    seen, unseen = batches()
    model = student()
    torch.manual_seed(7)  # the same FT draws as in the step below
    loss_seen = loss_on(model.train()(seen[0]), seen)
    grads = torch.autograd.grad(loss_seen, model.model_parameters(), allow_unused=True)
    expected = [p.detach() - 0.1 * (0 if g is None else g) for p, g in zip(model.model_parameters(), grads)]
    torch.manual_seed(7)
    out = learning_to_learn_step(model, loss_on, seen, unseen, 0.5, *optimizers(model, lr=0.1))
    assert out["seen"] == pytest.approx(loss_seen.item(), rel=1e-12)
    assert all(torch.allclose(p, e, rtol=1e-12, atol=1e-15) for p, e in zip(model.model_parameters(), expected))
    assert any(not torch.equal(p, q.detach()) for p, q in zip(model.model_parameters(), student().model_parameters()))


def test_l2l_theta_gradient_matches_finite_differences():
    seen, unseen = batches()
    inner_lr = 0.5

    def unseen_after_look_ahead(model):  # L_unseen(theta'(theta)) with fixed FT draws, no graph kept
        torch.manual_seed(3)
        loss_seen = loss_on(model.train()(seen[0]), seen)
        grads = torch.autograd.grad(loss_seen, model.model_parameters(), allow_unused=True)
        with torch.no_grad():
            for p, g in zip(model.model_parameters(), grads):
                if g is not None:
                    p -= inner_lr * g
            with ft_disabled(model):
                return loss_on(model(unseen[0]), unseen).item()

    model = student()
    torch.manual_seed(3)
    learning_to_learn_step(model, loss_on, seen, unseen, inner_lr, *optimizers(model, lr=0.0))
    analytic = model.blocks[0].ft.theta_gamma.grad[1].item()
    h, values = 1e-6, []
    for sign in (1, -1):
        m = student()
        with torch.no_grad():
            m.blocks[0].ft.theta_gamma[1] += sign * h
        values.append(unseen_after_look_ahead(m))
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic) > 1e-6 and analytic == pytest.approx(numeric, rel=1e-4)


def test_l2l_handles_unused_parameters_and_requires_ft_layers():
    seen, unseen = batches()
    model = student()
    model.unused = nn.Parameter(torch.zeros(3, dtype=f64))
    learning_to_learn_step(model, loss_on, seen, unseen, 0.5, *optimizers(model))
    assert model.unused.grad is None and torch.equal(model.unused, torch.zeros(3, dtype=f64))
    plain = student(ft_layers=False)
    with pytest.raises(ValueError, match="ft_layers"):
        learning_to_learn_step(plain, loss_on, seen, unseen, 0.5, torch.optim.SGD(plain.parameters(), 0.1),
                               torch.optim.SGD([nn.Parameter(torch.zeros(1))], 0.1))


def test_split_classes():
    seen, unseen = split_classes(10, 2, torch.Generator().manual_seed(0))
    assert seen.dtype == unseen.dtype == torch.int64 and len(seen) == 8 and len(unseen) == 2
    assert set(seen.tolist()) | set(unseen.tolist()) == set(range(10)) and not set(seen.tolist()) & set(unseen.tolist())
    assert torch.equal(seen, seen.sort().values)
    again = split_classes(10, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], seen) and torch.equal(again[1], unseen)
    draws = {tuple(split_classes(10, 2, g)[1].tolist()) for g in [torch.Generator().manual_seed(0)] for _ in range(20)}
    assert len(draws) > 1  # redrawn per call from the generator's stream
    four, one = split_classes(10, 1, torch.Generator().manual_seed(1), n_seen=4)  # the patent's episode
    assert len(four) == 4 and len(one) == 1 and one.item() not in four.tolist()
    with pytest.raises(ValueError, match="n_unseen"):
        split_classes(5, 5)
    with pytest.raises(ValueError, match="n_seen"):
        split_classes(5, 1, n_seen=5)
