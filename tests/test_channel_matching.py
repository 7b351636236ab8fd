"""Channel-matching feature distillation (pipeline/losses/channel_matching.py, docs/methods/channel_matching.md):
distance matrix, sparse and replicated Hungarian matching, the three target rules and the two pair losses.
Hand-computed small cases, planted matchings the solver must recover, and gradient checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from pipeline.losses import LOSSES
from pipeline.losses import channel_matching as cm
from pipeline.losses.channel_matching import (
    channel_distance,
    choose_teacher_channels,
    feature_mse,
    gather_channels,
    max_pooling,
    partial_l2,
    random_selection,
    replicated_matching,
    sparse_matching,
)

from tensors import f64, randn

SQRT2 = math.sqrt(2.0)


def planted(student, groups, m, seed=1):
    """Teacher (B, m, H, W): channel groups[k][j] a positive multiple of student channel k (distance 0 after
    normalisation), every other channel random."""
    b, _, h, w = student.shape
    teacher = randn(b, m, h, w, seed=seed)
    for k, channels in enumerate(groups):
        for j, c in enumerate(channels):
            teacher[:, c] = (j + 2.0) * student[:, k]
    return teacher


def spy_solver(monkeypatch):
    seen = []

    def spy(cost):
        seen.append(np.array(cost))
        return linear_sum_assignment(cost)

    monkeypatch.setattr(cm, "linear_sum_assignment", spy)
    return seen


def test_registered_names():
    assert LOSSES["channel_mse"] is feature_mse
    assert LOSSES["channel_partial_l2"] is partial_l2


# ---- distance matrix ---------------------------------------------------------------------------------------

# Two samples, two student and two teacher channels, maps of H x W = 1 x 2. Normalised maps, sample 1:
#   s0 = [3, 4] -> [.6, .8]   s1 = [1, 0]   t0 = [0, 2] -> [0, 1]   t1 = [1, 1] -> [1, 1] / sqrt2
#   D00 = .6^2 + .2^2 = 0.4   D01 = 2 - 2 (.6 + .8) / sqrt2 = 2 - 1.4 sqrt2   D10 = 1 + 1 = 2   D11 = 2 - sqrt2
# Sample 2: s0 = [1, 0], s1 = [0, 1], t0 = [0, 5] -> [0, 1], t1 = [2, 0] -> [1, 0]: adds [[2, 0], [0, 2]].
S_HAND = torch.tensor([[[[3.0, 4.0]], [[1.0, 0.0]]], [[[1.0, 0.0]], [[0.0, 1.0]]]], dtype=f64)
T_HAND = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[0.0, 5.0]], [[2.0, 0.0]]]], dtype=f64)
D_HAND = torch.tensor([[0.4 + 2, 2 - 1.4 * SQRT2], [2.0, 2 - SQRT2 + 2]], dtype=f64)


@pytest.mark.parametrize("kind", ["l2", "cosine"])
def test_distance_hand_case(kind):
    got = channel_distance(S_HAND, T_HAND, kind)
    assert got.shape == (2, 2) and got.dtype == f64
    assert torch.allclose(got, D_HAND, atol=1e-12)
    # Pairing (0->1, 1->0) costs 2.02 against 6.19 for the identity.
    assert sparse_matching(got).tolist() == [1, 0]


def test_l2_and_cosine_agree_for_unit_maps_and_differ_only_at_zero_maps():
    s, t = randn(5, 3, 4, 4), randn(5, 7, 4, 4, seed=1)
    assert torch.allclose(channel_distance(s, t, "l2"), channel_distance(s, t, "cosine"), atol=1e-10)
    s[:, 1] = 0  # a dead channel stays the zero vector: l2 distance 1, cosine distance 2 per sample, no NaN
    l2, cos = channel_distance(s, t, "l2"), channel_distance(s, t, "cosine")
    assert torch.isfinite(l2).all() and torch.allclose(l2[1], torch.full((7,), 5.0, dtype=f64))
    assert torch.allclose(cos[1], torch.full((7,), 10.0, dtype=f64))


def test_distance_is_a_sum_over_samples_scale_invariant_and_without_gradient():
    s, t = randn(6, 3, 2, 5, requires_grad=True), randn(6, 4, 2, 5, seed=1, requires_grad=True)
    whole = channel_distance(s, t)
    assert not whole.requires_grad
    assert torch.allclose(whole, channel_distance(s[:2], t[:2]) + channel_distance(s[2:], t[2:]))
    assert torch.allclose(whole, channel_distance(3 * s, 0.5 * t))
    assert channel_distance(s.float(), t.float()).dtype == torch.float32


def test_distance_rejects_bad_shapes_and_kinds():
    with pytest.raises(ValueError, match="m >= n"):
        channel_distance(randn(2, 4, 3, 3), randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match="m >= n"):
        channel_distance(randn(2, 2, 3, 3), randn(2, 3, 3, 4))
    with pytest.raises(ValueError, match="unknown channel distance"):
        channel_distance(randn(2, 2, 3, 3), randn(2, 3, 3, 3), "l1")


# ---- sparse matching ---------------------------------------------------------------------------------------


def test_sparse_matching_pads_n_by_m_to_m_by_m(monkeypatch):
    seen = spy_solver(monkeypatch)
    d = randn(3, 7).abs()
    sparse_matching(d)
    (cost,) = seen
    assert cost.shape == (7, 7)
    assert np.array_equal(cost[:3], d.numpy())
    assert (cost[3:] > d.max().item()).all()


def test_sparse_matching_recovers_a_planted_permutation():
    student = randn(5, 4, 3, 3)
    perm = [6, 2, 0, 4]  # teacher channel of student k; channels 1, 3, 5 are extra
    teacher = planted(student, [[c] for c in perm], m=7)
    got = sparse_matching(channel_distance(student, teacher))
    assert got.dtype == torch.int64 and got.shape == (4,) and not got.requires_grad
    assert got.tolist() == perm
    assert torch.equal(gather_channels(teacher, got), teacher[:, perm])


@pytest.mark.parametrize("seed", range(5))
def test_sparse_matching_is_the_rectangular_optimum_with_distinct_channels(seed):
    d = randn(5, 9, seed=seed).abs()
    got = sparse_matching(d)
    assert len(set(got.tolist())) == 5
    rows, cols = linear_sum_assignment(d.numpy())
    assert math.isclose(d[torch.arange(5), got].sum().item(), d.numpy()[rows, cols].sum(), rel_tol=1e-12)


def test_matching_rejects_more_student_than_teacher_channels_and_non_finite_distances():
    with pytest.raises(ValueError, match="n <= m"):
        sparse_matching(randn(4, 3))
    with pytest.raises(ValueError, match="n <= m"):
        replicated_matching(randn(4, 3))
    bad = randn(2, 3)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        sparse_matching(bad)


# ---- replicated matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n,m", [(3, 6), (3, 7), (4, 4), (2, 9), (5, 6)])
def test_replicated_matching_stacks_r_copies_to_s_by_s(monkeypatch, n, m):
    seen = spy_solver(monkeypatch)
    d = randn(n, m).abs()
    got = replicated_matching(d, torch.Generator().manual_seed(0))
    r, s = m // n, (m // n) * n
    (cost,) = seen
    assert cost.shape == (s, s)
    chosen = choose_teacher_channels(n, m, torch.Generator().manual_seed(0))
    for j in range(r):  # every copy is D on the chosen channels
        assert np.array_equal(cost[j * n:(j + 1) * n], d[:, chosen].numpy())
    # Every student channel gets r distinct teacher channels, no teacher channel twice, all from the chosen s.
    assert got.shape == (n, r) and got.dtype == torch.int64 and not got.requires_grad
    assert sorted(got.flatten().tolist()) == chosen.tolist()


def test_replicated_matching_recovers_planted_groups():
    student = randn(8, 3, 4, 4)
    groups = [[5, 0], [3, 1], [2, 4]]
    teacher = planted(student, groups, m=6)
    got = replicated_matching(channel_distance(student, teacher), choose="odd_first")
    assert got.tolist() == [sorted(g) for g in groups]


def test_replicated_matching_recovers_planted_groups_around_the_channel_odd_first_drops():
    # m = 7, n = 3: odd_first drops 0-based channel 5 (position 6), which is unrelated here.
    student = randn(8, 3, 4, 4)
    groups = [[6, 1], [0, 3], [4, 2]]
    teacher = planted(student, groups, m=7)
    got = replicated_matching(channel_distance(student, teacher), choose="odd_first")
    assert got.tolist() == [sorted(g) for g in groups]


def test_odd_first_takes_odd_positions_then_even_ones():
    # Positions from 1: odd 1, 3, 5, 7 (indices 0, 2, 4, 6), then even 2, 4 (indices 1, 3): drops index 5.
    assert choose_teacher_channels(3, 7, choose="odd_first").tolist() == [0, 1, 2, 3, 4, 6]
    # m = 11, n = 4: s = 8 -> indices 0, 2, 4, 6, 8, 10, then 1, 3: drops 5, 7, 9.
    assert choose_teacher_channels(4, 11, choose="odd_first").tolist() == [0, 1, 2, 3, 4, 6, 8, 10]
    # r = 1 (m < 2n): s = n.
    assert choose_teacher_channels(5, 6, choose="odd_first").tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("choose", ["random", "odd_first"])
def test_all_teacher_channels_are_used_when_n_divides_m(choose):
    assert choose_teacher_channels(4, 12, torch.Generator().manual_seed(0), choose).tolist() == list(range(12))
    got = replicated_matching(randn(4, 12).abs(), torch.Generator().manual_seed(0), choose)
    assert sorted(got.flatten().tolist()) == list(range(12))


def test_random_choice_is_an_s_subset_from_the_generator():
    n, m, s = 3, 11, 9
    subsets = set()
    for seed in range(30):
        got = choose_teacher_channels(n, m, torch.Generator().manual_seed(seed), "random")
        expected = torch.randperm(m, generator=torch.Generator().manual_seed(seed))[:s].sort().values
        assert torch.equal(got, expected) and got.dtype == torch.int64
        assert len(set(got.tolist())) == s and 0 <= got.min() and got.max() < m
        subsets.add(tuple(got.tolist()))
        matched = replicated_matching(randn(n, m, seed=seed).abs(), torch.Generator().manual_seed(seed))
        assert sorted(matched.flatten().tolist()) == got.tolist()
    assert len(subsets) > 10  # a draw, not a fixed rule
    with pytest.raises(ValueError, match="unknown channel choice"):
        choose_teacher_channels(3, 7, choose="first")


# ---- targets: gather, random selection, max pooling --------------------------------------------------------

ASSIGNMENT = torch.tensor([[0, 4, 7], [1, 2, 5], [3, 6, 8]])  # (n, r) = (3, 3) out of m = 9


def labelled_teacher(b=16, m=9):
    """Teacher whose channel c holds the value c everywhere, so a target's values name the channels used."""
    return torch.arange(m, dtype=f64)[None, :, None, None].expand(b, m, 2, 3).clone()


def test_random_selection_per_step_shares_one_draw_across_the_batch_and_covers_all_r():
    teacher, g = labelled_teacher(), torch.Generator().manual_seed(0)
    picked = [set() for _ in range(3)]
    for _ in range(60):
        out = random_selection(teacher, ASSIGNMENT, g, per="step")
        assert out.shape == (16, 3, 2, 3)
        for k in range(3):
            values = out[:, k].unique().tolist()
            assert len(values) == 1  # the same channel for every sample and position
            picked[k].add(int(values[0]))
    assert picked == [set(row) for row in ASSIGNMENT.tolist()]  # only the matched channels, all of them


def test_random_selection_per_sample_differs_across_the_batch_and_covers_all_r():
    teacher, g = labelled_teacher(b=32), torch.Generator().manual_seed(0)
    out = random_selection(teacher, ASSIGNMENT, g, per="sample")
    assert out.shape == (32, 3, 2, 3)
    for k in range(3):
        per_sample = out[:, k].flatten(1)
        assert (per_sample == per_sample[:, :1]).all()  # one channel per sample (not per position)
        assert set(per_sample[:, 0].long().tolist()) == set(ASSIGNMENT[k].tolist())


def test_random_selection_is_reproducible_from_the_generator_and_checks_its_rule():
    teacher = randn(4, 9, 2, 2)
    a = random_selection(teacher, ASSIGNMENT, torch.Generator().manual_seed(5), per="sample")
    b = random_selection(teacher, ASSIGNMENT, torch.Generator().manual_seed(5), per="sample")
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="unknown selection"):
        random_selection(teacher, ASSIGNMENT, per="epoch")


def test_max_pooling_is_the_elementwise_max_of_the_matched_channels():
    teacher = randn(4, 9, 3, 3)
    out = max_pooling(teacher, ASSIGNMENT)
    assert out.shape == (4, 3, 3, 3)
    for k, (a, b, c) in enumerate(ASSIGNMENT.tolist()):
        expected = torch.maximum(torch.maximum(teacher[:, a], teacher[:, b]), teacher[:, c])
        assert torch.equal(out[:, k], expected)


def test_gather_channels_takes_the_sparse_match():
    teacher = randn(2, 5, 3, 3)
    assert torch.equal(gather_channels(teacher, torch.tensor([4, 0])), teacher[:, [4, 0]])


def test_matching_creates_no_parameters_only_index_tensors():
    student = randn(4, 3, 2, 2, requires_grad=True)
    teacher = randn(4, 6, 2, 2, seed=1, requires_grad=True)
    d = channel_distance(student, teacher)
    for index in (sparse_matching(d), replicated_matching(d), replicated_matching(d.requires_grad_())):
        assert index.dtype == torch.int64 and not index.requires_grad
        assert not isinstance(index, torch.nn.Parameter)
    for fn in (channel_distance, sparse_matching, replicated_matching, random_selection, max_pooling):
        assert not isinstance(fn, torch.nn.Module)


# ---- losses ------------------------------------------------------------------------------------------------

# Student s and teacher t, one element per channel; (s - t)^2 = 1, 0, 1, 4, 9, 4.
# Partial L2 counts (s - t)^2 unless s <= t and t <= 0:
#   (-2, -1): below a negative teacher, skipped;  (-1, -1): equal, 0;  (.5, -.5): above it, 1;
#   (1, 3): teacher positive, 4;  (-3, 0): below a zero teacher, skipped;  (3, 1): 4.  Mean over 6: 9 / 6.
S_LOSS = torch.tensor([-2.0, -1.0, 0.5, 1.0, -3.0, 3.0], dtype=f64).reshape(1, 6, 1, 1)
T_LOSS = torch.tensor([-1.0, -1.0, -0.5, 3.0, 0.0, 1.0], dtype=f64).reshape(1, 6, 1, 1)


def test_mse_hand_case():
    assert math.isclose(feature_mse(S_LOSS, T_LOSS).item(), 19 / 6, rel_tol=1e-12)
    assert torch.equal(feature_mse(S_LOSS, T_LOSS), torch.nn.functional.mse_loss(S_LOSS, T_LOSS))


def test_partial_l2_hand_case_with_negative_teacher_values():
    s = S_LOSS.clone().requires_grad_()
    loss = partial_l2(s, T_LOSS)
    assert math.isclose(loss.item(), 1.5, rel_tol=1e-12)
    loss.backward()
    # d/ds = 2 (s - t) / 6 where counted: 2 / 6, 2 (-2) / 6, 2 (2) / 6; exactly 0 where skipped.
    expected = torch.tensor([0, 0, 1 / 3, -2 / 3, 0, 2 / 3], dtype=f64).reshape(1, 6, 1, 1)
    assert torch.allclose(s.grad, expected, atol=1e-15)
    assert s.grad[0, 0].item() == 0 and s.grad[0, 4].item() == 0


def test_partial_l2_margin_raises_the_negative_teacher_values():
    # t = -3 lifted to the margin -1: s = -2 is now below it (skipped); s = -.5 above it, (.5)^2. Mean: .125.
    s = torch.tensor([-2.0, -0.5], dtype=f64).reshape(1, 2, 1, 1)
    t = torch.full((1, 2, 1, 1), -3.0, dtype=f64)
    assert math.isclose(partial_l2(s, t, margin=-1.0).item(), 0.125, rel_tol=1e-12)
    assert math.isclose(partial_l2(s, t, margin=torch.tensor([-1.0, -1.0]).reshape(1, 2, 1, 1)).item(), 0.125)
    assert math.isclose(partial_l2(s, t).item(), (1 + 2.5**2) / 2, rel_tol=1e-12)  # both above t = -3


def test_partial_l2_is_at_most_mse_and_equal_for_a_positive_teacher():
    s, t = randn(3, 4, 5, 5), randn(3, 4, 5, 5, seed=1)
    assert partial_l2(s, t) < feature_mse(s, t)
    assert torch.allclose(partial_l2(s, t.abs() + 0.1), feature_mse(s, t.abs() + 0.1))


@pytest.mark.parametrize("loss", [feature_mse, partial_l2])
@pytest.mark.parametrize("rule", ["sparse", "random", "max"])
def test_gradient_reaches_only_the_student(loss, rule):
    student = randn(4, 3, 3, 3, requires_grad=True)
    teacher = randn(4, 7, 3, 3, seed=1, requires_grad=True)
    d = channel_distance(student, teacher)
    if rule == "sparse":
        target = gather_channels(teacher, sparse_matching(d))
    elif rule == "random":
        target = random_selection(teacher, replicated_matching(d), torch.Generator().manual_seed(0))
    else:
        target = max_pooling(teacher, replicated_matching(d))
    loss(student, target).backward()
    assert teacher.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", [feature_mse, partial_l2])
def test_loss_and_gradient_are_exactly_zero_at_student_equals_target(loss):
    student = randn(4, 3, 3, 3, requires_grad=True)
    target = student.detach().clone().requires_grad_()
    value = loss(student, target)
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student)) and target.grad is None


@pytest.mark.parametrize("loss", [feature_mse, partial_l2])
def test_losses_reject_mismatched_shapes(loss):
    with pytest.raises(ValueError, match="target"):
        loss(randn(2, 3, 2, 2), randn(2, 4, 2, 2))
