"""The shared optimiser and schedule (pipeline/optim.py)."""
from __future__ import annotations

import math

import torch

from pipeline import optim
from pipeline.models import clip as clip_lib


def _train(make_optimizer, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    optimizer = make_optimizer(clip.model.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        loss = clip_lib.encode_images(clip, images).square().sum() + clip.model.logit_scale
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return [p.detach().clone() for p in clip.model.parameters()]


def test_adamw_foreach_gives_the_bytes_of_the_per_tensor_loop():
    """optim.adamw runs torch's foreach kernels for speed; the checkpoints must not change by a bit."""

    def loop(parameters):
        reference = optim.adamw(parameters, 1e-3, 0.1)
        groups = [{k: v for k, v in g.items() if k in ("params", "weight_decay")} for g in reference.param_groups]
        return torch.optim.AdamW(groups, lr=1e-3, foreach=False)

    fast = _train(lambda ps: optim.adamw(ps, 1e-3, 0.1))
    slow = _train(loop)
    assert all(torch.equal(a, b) for a, b in zip(fast, slow))
    assert not all(torch.equal(a, b) for a, b in zip(fast, _train(lambda ps: optim.adamw(ps, 1e-3, 0.1), steps=0)))


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
