"""Arithmetic on model weights for the methods that change the trained weights themselves: WiSE-FT's
interpolation (Wortsman et al., CVPR 2022) and ZSCL's weight ensemble (Zheng et al., ICCV 2023).

A "state" here is the floating-point part of a state_dict (parameters and float buffers such as BatchNorm
running statistics), detached copies. Integer buffers (BatchNorm's num_batches_tracked) are not weights:
they are left as the model has them. Entries equal in both operands are passed through untouched: besides
saving work, it keeps frozen values (logit_scale, frozen BatchNorm statistics) bit-identical, and it never
forms 0 * inf for an entry holding infinities.
"""
from __future__ import annotations

import torch
from torch import Tensor

State = dict[str, Tensor]


def floating_state(model: torch.nn.Module) -> State:
    """Detached copies of the model's floating-point state_dict entries (parameters and float buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


@torch.no_grad()
def assign(model: torch.nn.Module, state: State) -> None:
    """Copy `state` into the model in place (the optimiser and any hooks keep their tensors)."""
    current = model.state_dict()
    unknown = set(state) - set(current)
    if unknown:
        raise KeyError(f"state has entries the model lacks: {sorted(unknown)[:5]}")
    for key, value in state.items():
        current[key].copy_(value)


def interpolate(prev: State, finetuned: State, alpha: float) -> State:
    """WiSE-FT: ``theta = (1 - alpha) * theta_prev + alpha * theta_ft`` per entry.

    alpha = 0 gives theta_prev and alpha = 1 theta_ft exactly (1 * x + 0 * y == x in floating point for finite
    y), so the two ends are the previous and the fine-tuned model bit for bit.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    _same_keys(prev, finetuned)
    return {
        k: prev[k] if torch.equal(prev[k], finetuned[k]) else (1 - alpha) * prev[k] + alpha * finetuned[k]
        for k in prev
    }


def running_average(average: State, current: State, count: int) -> State:
    """The mean of `count` snapshots updated with one more: ``(average * count + current) / (count + 1)``
    (ZSCL's ``merge_we``)."""
    if count < 1:
        raise ValueError(f"count must be >= 1 (the average already holds `count` snapshots); got {count}")
    _same_keys(average, current)
    return {
        k: average[k] if torch.equal(average[k], current[k]) else (average[k] * count + current[k]) / (count + 1)
        for k in average
    }


def _same_keys(a: State, b: State) -> None:
    if set(a) != set(b):
        raise KeyError(f"states differ in entries: {sorted(set(a) ^ set(b))[:5]}")
