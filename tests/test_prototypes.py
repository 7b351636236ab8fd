"""Tests of pipeline.continual.prototypes (spec steps 1 and 3)."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.continual.prototypes import initial_prototypes, update_prototypes

f64 = torch.float64
R2 = 1 / math.sqrt(2)


def test_initial_prototypes_hand_case():
    # Class 0: (2,0), (0,3) -> normalised (1,0), (0,1) -> mean (1/2, 1/2) -> norm (1/r2, 1/r2).
    #   (Averaging before normalising would give (2,3)/sqrt(13) instead.)
    # Class 1: (0,-4) -> (0,-1).
    f = torch.tensor([[2.0, 0.0], [0.0, -4.0], [0.0, 3.0]], dtype=f64)
    got = initial_prototypes(f, torch.tensor([0, 1, 0]), num_classes=2)
    assert torch.allclose(got, torch.tensor([[R2, R2], [0.0, -1.0]], dtype=f64), rtol=0, atol=1e-15)


def test_initial_prototypes_missing_class_named():
    f = torch.randn(4, 3)
    with pytest.raises(ValueError, match="class 2"):
        initial_prototypes(f, torch.tensor([0, 1, 3, 0]), num_classes=4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        initial_prototypes(f, torch.tensor([0, 1, 2, 0]), num_classes=2)


def test_initial_prototypes_no_grad_and_unit():
    f = torch.randn(10, 6, requires_grad=True)
    p = initial_prototypes(f, torch.arange(10) % 3, num_classes=3)
    assert not p.requires_grad and p.shape == (3, 6)
    assert torch.allclose(p.norm(dim=1), torch.ones(3))


def prototypes_2d():
    return torch.tensor([[1.0, 0.0], [0.0, 1.0], [R2, R2]], dtype=f64)


def test_update_prototypes_hand_case():
    # gamma = 3/4. Batch: class 0 at (1,0) and (0,1); class 2 at (-2,0) (normalised: (-1,0)); class 1 absent.
    # mu_0 = norm((1/2, 1/2)) = (1/r2, 1/r2); p_0 <- norm(3/4 (1,0) + 1/4 (1/r2, 1/r2))
    #      = norm((3/4 + 1/(4 r2), 1/(4 r2))).
    # mu_2 = (-1, 0);  p_2 <- norm(3/4 (1/r2, 1/r2) + 1/4 (-1, 0)) = norm((3/(4 r2) - 1/4, 3/(4 r2))).
    # p_1 unchanged.
    a0, b0 = 0.75 + 0.25 * R2, 0.25 * R2
    a2, b2 = 0.75 * R2 - 0.25, 0.75 * R2
    expected = torch.tensor(
        [
            [a0 / math.hypot(a0, b0), b0 / math.hypot(a0, b0)],
            [0.0, 1.0],
            [a2 / math.hypot(a2, b2), b2 / math.hypot(a2, b2)],
        ],
        dtype=f64,
    )
    f = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0]], dtype=f64)
    p = prototypes_2d()
    got = update_prototypes(p, f, torch.tensor([0, 2, 0]), gamma=0.75)
    assert torch.allclose(got, expected, rtol=0, atol=1e-15)
    assert torch.equal(got[1], p[1])  # absent class: bit-for-bit unchanged
    assert torch.equal(p, prototypes_2d())  # pure: the input is not modified
    assert got.data_ptr() != p.data_ptr()


def test_update_prototypes_gamma_extremes():
    p = torch.nn.functional.normalize(torch.randn(5, 8, dtype=f64), dim=-1)
    f, y = torch.randn(12, 8, dtype=f64), torch.tensor([0, 1, 3, 3, 0, 1, 0, 3, 1, 1, 0, 3])
    assert torch.allclose(update_prototypes(p, f, y, gamma=1.0), p, rtol=0, atol=1e-15)
    replaced = update_prototypes(p, f, y, gamma=0.0)
    # gamma = 0: present classes become the batch means of the normalised features; absent (2, 4) unchanged.
    fn = torch.nn.functional.normalize(f, dim=-1)
    for c in (0, 1, 3):
        mean = fn[y == c].mean(dim=0)
        assert torch.allclose(replaced[c], mean / mean.norm(), atol=1e-15)
    assert torch.equal(replaced[[2, 4]], p[[2, 4]])


def test_update_prototypes_unit_norm_no_grad_scale_invariant():
    p = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1).requires_grad_()
    f = torch.randn(20, 16, requires_grad=True)
    y = torch.randint(0, 6, (20,), generator=torch.Generator().manual_seed(0))
    out = update_prototypes(p, f, y, gamma=0.9)
    assert not out.requires_grad
    assert torch.allclose(out.norm(dim=1), torch.ones(6), atol=1e-6)
    # Each feature row is normalised before the class mean: rescaling rows does not move the prototypes.
    scale = torch.rand(20, 1) * 10 + 0.1
    assert torch.allclose(update_prototypes(p, f * scale, y, gamma=0.9), out, atol=1e-6)


def test_update_prototypes_rejects_bad_gamma():
    p = prototypes_2d()
    for gamma in (-0.1, 1.5):
        with pytest.raises(ValueError, match="gamma"):
            update_prototypes(p, p, torch.tensor([0, 1, 2]), gamma=gamma)
