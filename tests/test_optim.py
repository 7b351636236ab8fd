"""The shared optimiser and schedule (pipeline/optim.py)."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline import optim
from pipeline.training import MAX_CURVE_POINTS, run_steps
from pipeline.models import clip as clip_lib


def _train(make_optimizer, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    optimizer = make_optimizer(clip.model.parameters())
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(4, clip.model.visual.output_dim, generator=generator)
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        # Features against a fixed direction: every weight gets a real gradient (the sum of squares of
        # normalised features is a constant, whose gradient is rounding noise that Adam would blow up).
        loss = (clip_lib.encode_images(clip, images) * target).sum() + clip.model.logit_scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in clip.model.parameters()]


def test_adamw_fused_is_the_per_tensor_loop_up_to_rounding_and_repeats_byte_for_byte():
    """optim.adamw runs torch's fused kernel for speed: the same update as the reference loop (to float
    rounding), and the same bytes on every run (the pipeline's checkpoints are deterministic)."""

    def loop(parameters):
        reference = optim.adamw(parameters, 1e-3, 0.1)
        assert all(g["fused"] for g in reference.param_groups)
        groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in reference.param_groups]
        return torch.optim.AdamW(groups, lr=1e-3, foreach=False)

    fast = _train(lambda ps: optim.adamw(ps, 1e-3, 0.1))
    slow = _train(loop)
    start = _train(loop, steps=0)
    # Apart by well under 1 % of what the 5 steps moved the weights. Not elementwise: a weight whose true
    # gradient is 0 (a bias that BatchNorm cancels) gets rounding noise, which Adam scales up to full steps.
    flat = [torch.cat([t.flatten() for t in ts]) for ts in (fast, slow, start)]
    assert (flat[0] - flat[1]).norm() <= 1e-2 * (flat[1] - flat[2]).norm()
    assert sum(not torch.equal(b, w) for b, w in zip(slow, start)) > len(start) // 2
    assert all(torch.equal(a, b) for a, b in zip(fast, _train(lambda ps: optim.adamw(ps, 1e-3, 0.1))))


def test_adamw_decays_matrices_only():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    decay, no_decay = optim.adamw(model.parameters(), 1e-3, 0.1).param_groups
    assert decay["weight_decay"] == 0.1 and [p.ndim for p in decay["params"]] == [2]
    assert no_decay["weight_decay"] == 0.0 and sorted(p.ndim for p in no_decay["params"]) == [1, 1, 1]


def test_warmup_cosine_by_hand():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = optim.warmup_cosine(optimizer, warmup_steps=2, total_steps=6)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    # warm-up 1/2, 2/2; then 0.5 (1 + cos(pi k / 4)) for k = 0..4, clamped at the end
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    assert rates == expected


class _Live:
    """The part of DVCLive's logger run_steps uses: the step each value is logged at."""

    def __init__(self):
        self.step, self.rows = 0, []

    def log_metric(self, name, value, plot=True):
        self.rows.append((self.step, name, value))

    def next_step(self):
        self.step += 1


def test_run_steps_logs_every_step_of_a_short_run_and_thins_a_long_one_against_the_step_number():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    for steps, expected in ((50, list(range(50))),
                            (450, list(range(0, 450, 3)) + [449])):  # ceil(450 / 200) = 3; the last step too
        live = _Live()
        schedule = optim.warmup_cosine(optimizer, 1, steps)

        def step(i, _):
            optimizer.step()  # (the schedule warns when it steps ahead of its optimiser)
            return {"ce": float(i)}

        last = run_steps(iter(range(steps)), steps, step, schedule, live, log_lr=False)
        assert last == {"ce": steps - 1.0}
        assert [s for s, _, _ in live.rows] == expected and all(s == v for s, _, v in live.rows)
        assert len(expected) <= MAX_CURVE_POINTS + 1


def test_sgd_is_nesterov_and_decays_every_parameter():
    """The MCL authors' CIFAR optimiser: Nesterov momentum, weight decay on gains and biases as on matrices."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    (group,) = optim.sgd(model.parameters(), 0.1, 5e-4, 0.9).param_groups
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert sorted(p.ndim for p in group["params"]) == [1, 1, 1, 2]
    # Without momentum torch refuses Nesterov: plain SGD then.
    assert not optim.sgd(model.parameters(), 0.1, 0.0, 0.0).param_groups[0]["nesterov"]


def test_sgd_step_by_hand():
    """Two steps of w <- w - lr (g + mu b), b <- mu b + g + wd w (Nesterov), on f(w) = w^2 / 2 from w = 1."""
    w = torch.nn.Parameter(torch.tensor([1.0]))
    opt = optim.sgd([w], lr=0.1, weight_decay=0.5, momentum=0.9)
    expected, b = 1.0, 0.0
    for _ in range(2):
        opt.zero_grad()
        (w**2 / 2).sum().backward()
        g = expected + 0.5 * expected  # gradient w plus decay 0.5 w
        b = 0.9 * b + g
        expected -= 0.1 * (g + 0.9 * b)
        opt.step()
        assert w.item() == pytest.approx(expected, rel=1e-6)


def test_from_recipe_builds_each_sections_optimiser_and_schedule():
    """One recipe builder for every branch: adamw where the section names no optimiser (pretrain, train),
    sgd with its momentum where it does; a null warm-up is a twentieth of the steps."""
    from types import SimpleNamespace

    weight, bias = torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(2))
    adamw, schedule = optim.from_recipe([weight, bias], SimpleNamespace(lr=0.5, weight_decay=0.1, warmup_steps=4), 8)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.1, 0.0]  # 1-D parameters not decayed
    assert schedule.get_last_lr() == [0.5 / 4, 0.5 / 4]  # step 0 of a 4-step warm-up
    recipe = SimpleNamespace(optimizer="sgd", lr=0.1, weight_decay=5e-4, momentum=0.9, warmup_steps=None)
    sgd, schedule = optim.from_recipe([weight, bias], recipe, 100)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["weight_decay"] == 5e-4
    assert schedule.get_last_lr() == [pytest.approx(0.1 / 5)]  # warm-up of 100 // 20 = 5 steps
