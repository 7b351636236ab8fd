"""Arithmetic on model weights for the methods that change the trained weights themselves: WiSE-FT's
interpolation (Wortsman et al., CVPR 2022) and ZSCL's weight ensemble (Zheng et al., ICCV 2023), which
dual-teacher can use too (`loss.dual_ensemble_every`).

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


class WeightEnsemble:
    """ZSCL's weight ensemble ("Weight Ensemble in Parameter Space"), as its code (`merge_we`, `iteration %
    avg_freq == 0`): the weights a task starts from count as the first snapshot, then the weights after steps 1,
    N + 1, 2N + 1, ... (0-based step index divisible by N), each folded into the running mean; `finish` puts the
    mean in the model. So the mean always holds at least one trained snapshot, and N = 1 averages the initial
    weights and the weights after every step. `every` 0: off (nothing kept, the model left as trained). It needs
    no data: only the model's own weights."""

    def __init__(self, model: torch.nn.Module, every: int):
        self.every = every
        self.average = floating_state(model) if every else None
        self.snapshots = 1  # the initial weights count as the first snapshot
        self.steps_taken = 0

    def after_step(self, model: torch.nn.Module) -> None:
        if self.every and self.steps_taken % self.every == 0:
            self.average = running_average(self.average, floating_state(model), self.snapshots)
            self.snapshots += 1
        self.steps_taken += 1

    def finish(self, model: torch.nn.Module) -> None:
        if self.average is not None:
            assign(model, self.average)


def _same_keys(a: State, b: State) -> None:
    if set(a) != set(b):
        raise KeyError(f"states differ in entries: {sorted(set(a) ^ set(b))[:5]}")
