"""Properties every registered loss must have, parametrised over the registry (pipeline.losses.LOSSES): a
new loss is tested as soon as it has a case in CASES, and a registered loss without one fails the first test.

Each case builds the loss's inputs at random; `student` names the argument that is the student's output and
`teachers` the arguments it is distilled towards (none for a supervised loss). At student == teacher a
distillation loss is at its minimum, so its gradient there must be exactly zero (not merely small)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch

from pipeline.losses import LOSSES

B, K, D, C = 6, 5, 8, 3  # batch, classes, feature width, prototypes


def _logits(g):
    return torch.randn(B, K, generator=g, dtype=torch.float64)


def _labels(g, classes=K):
    return torch.randint(0, classes, (B,), generator=g)


def _features(g, rows=B):
    return torch.randn(rows, D, generator=g, dtype=torch.float64)


def _embeddings(g):
    return torch.nn.functional.normalize(_features(g), dim=1)


def _pairs():
    return torch.arange(B) // 2  # every sample has one other of its class


@dataclass(frozen=True)
class Case:
    build: Callable[[torch.Generator], dict]
    student: str | None = None  # the argument that is the student's output
    teachers: tuple[str, ...] = field(default_factory=tuple)  # set equal to the student for the minimum


CASES = {
    "weight_l2": Case(lambda g: {"weights": _features(g), "reference": _features(g)}, "weights", ("reference",)),
    "attention_distillation": Case(
        lambda g: {"student_maps": torch.rand(B, 9, generator=g, dtype=torch.float64),
                   "teacher_maps": torch.rand(B, 9, generator=g, dtype=torch.float64)},
        "student_maps", ("teacher_maps",)),
    "clip_ce": Case(lambda g: {"image_features": _features(g), "text_features": _features(g, K), "labels": _labels(g),
                               "logit_scale": 2.0, "label_smoothing": 0.1}),
    "clip_contrastive": Case(lambda g: {"image_features": _features(g), "text_features": _features(g), "logit_scale": 2.0}),
    "soft_distillation": Case(
        lambda g: {"z_s": _logits(g), "z_d": _logits(g), "z_t": _logits(g), "labels": _labels(g), "lam": 1.0, "tau": 2.0},
        "z_d", ("z_t",)),  # lam 1: the distillation term alone (the CE term has its own minimum)
    "hard_distillation": Case(lambda g: {"z_s": _logits(g), "z_d": _logits(g), "z_t": _logits(g), "labels": _labels(g)}),
    "student_ce": Case(lambda g: {"z_s": _logits(g), "z_d": _logits(g), "labels": _labels(g)}),
    "prototype_contrastive": Case(lambda g: {"image_features": _features(g), "labels": _labels(g, C),
                                             "text_features": _features(g, C), "prototypes": _features(g, C), "tau": 0.5}),
    "similarity_distillation": Case(
        lambda g: {"student_rows": _features(g), "teacher_rows": _features(g), "prototypes": _features(g, C),
                   "row_weights": torch.rand(B, generator=g, dtype=torch.float64)},
        "student_rows", ("teacher_rows",)),
    "dual_teacher_distillation": Case(
        lambda g: {"student_rows": _features(g), "prototypes": _features(g, C), "e0_rows": _features(g),
                   "prev_rows": _features(g), "weighting": "adaptive"},
        "student_rows", ("e0_rows", "prev_rows")),
    "knowledge_distillation": Case(lambda g: {"student_logits": _logits(g), "teacher_logits": _logits(g), "temperature": 2.0},
                                   "student_logits", ("teacher_logits",)),
    "zscl_distillation": Case(lambda g: {"student_logits": _logits(g), "teacher_logits": _logits(g), "temperature": 2.0},
                              "student_logits", ("teacher_logits",)),
    # The paper's `sigmoid` form is not minimal at equality (pipeline/losses/kd.py): its `bce` form is.
    "lwm_distillation": Case(lambda g: {"student_logits": _logits(g), "teacher_logits": _logits(g), "form": "bce"},
                             "student_logits", ("teacher_logits",)),
    # Matched (B, n, H, W) feature maps of channel-matching distillation (pipeline/losses/channel_matching.py).
    "channel_mse": Case(lambda g: {"student": torch.randn(B, 4, 3, 3, generator=g, dtype=torch.float64),
                                   "target": torch.randn(B, 4, 3, 3, generator=g, dtype=torch.float64)},
                        "student", ("target",)),
    "channel_partial_l2": Case(lambda g: {"student": torch.randn(B, 4, 3, 3, generator=g, dtype=torch.float64),
                                          "target": torch.randn(B, 4, 3, 3, generator=g, dtype=torch.float64)},
                               "student", ("target",)),
    # Mutual contrastive learning (pipeline/losses/contrastive.py): L2-normalised embeddings, every label twice.
    "vcl": Case(lambda g: {"v_a": _embeddings(g), "labels": _pairs(), "tau": 0.5}),
    "icl": Case(lambda g: {"v_a": _embeddings(g), "v_b": _embeddings(g), "labels": _pairs(), "tau": 0.5,
                           "diagonal": "positive"}),
    "soft_vcl": Case(lambda g: {"v_a": _embeddings(g), "v_b": _embeddings(g), "tau": 0.5, "temperature": 3.0},
                     "v_a", ("v_b",)),
    "soft_icl": Case(lambda g: {"v_a": _embeddings(g), "v_b": _embeddings(g), "tau": 0.5, "temperature": 3.0},
                     "v_a", ("v_b",)),
    # A cohort's stacked logits (pipeline/losses/mutual.py); DML's zero gradient where the networks agree: there.
    "cohort_ce": Case(lambda g: {"logits": torch.randn(3, B, K, generator=g, dtype=torch.float64), "labels": _labels(g)}),
    "mutual_learning": Case(lambda g: {"logits": torch.randn(3, B, K, generator=g, dtype=torch.float64),
                                       "temperature": 2.0}),
}
DISTILLATION = [name for name, case in CASES.items() if case.student]


def _inputs(name: str, seed: int = 0, equal: bool = False) -> dict:
    case = CASES[name]
    kwargs = case.build(torch.Generator().manual_seed(seed))
    if equal:
        for teacher in case.teachers:
            kwargs[teacher] = kwargs[case.student].clone()
    for key, value in kwargs.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            kwargs[key] = value.requires_grad_(key == case.student or case.student is None)
    return kwargs


def test_every_registered_loss_has_a_case():
    assert sorted(CASES) == sorted(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_a_finite_non_negative_scalar_the_same_every_time(name, seed):
    value = LOSSES[name](**_inputs(name, seed))
    again = LOSSES[name](**_inputs(name, seed))
    assert value.shape == () and torch.isfinite(value) and value >= 0
    assert torch.equal(value, again)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_finite_and_reach_the_trained_inputs(name):
    kwargs = _inputs(name)
    LOSSES[name](**kwargs).backward()
    trained = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.requires_grad}
    assert trained
    reached = {k: t.grad for k, t in trained.items() if t.grad is not None}  # teachers, prototypes: constants
    assert all(torch.isfinite(g).all() for g in reached.values())
    assert any(g.abs().sum() > 0 for g in reached.values())


@pytest.mark.parametrize("name", DISTILLATION)
def test_zero_gradient_and_the_minimum_where_student_equals_teacher(name):
    case = CASES[name]
    at = _inputs(name, equal=True)
    value = LOSSES[name](**at)
    value.backward()
    grad = at[case.student].grad
    assert torch.equal(grad, torch.zeros_like(grad)), f"{name}: largest gradient {grad.abs().max().item():.3g}"
    # A minimum, not a saddle: moving the student away does not lower the loss.
    moved = _inputs(name, equal=True)
    with torch.no_grad():
        moved[case.student] += 0.1 * torch.randn(moved[case.student].shape, generator=torch.Generator().manual_seed(3),
                                                 dtype=torch.float64)
    assert LOSSES[name](**moved) > value
