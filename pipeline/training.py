"""The optimisation loop every training in the project runs: named loss terms, their weighted sum, one step of
the optimiser and the schedule, every term logged by name. Methods differ in the terms they return and, where
a method needs another update (learning-to-learn), in their step; never in the loop."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor
from tqdm import tqdm

from pipeline.errors import Diverged

Terms = dict[str, Tensor]
StepFn = Callable[[int, Any], dict[str, float]]  # (step, batch: its indices, or whatever `order` yields) -> logged values
# Points per training curve at most. DVCLive's next_step re-reads every curve's whole TSV (dvclive 3.49:
# sync -> post_data_to_studio -> parse_metrics, even with Studio off), so logging every step costs O(steps^2):
# 8.6 ms a step averaged over 1,260 steps here, 11 s of a token student's 112 s training.
MAX_CURVE_POINTS = 200


def weighted_step(terms: Terms, weights: dict[str, float], optimizer: torch.optim.Optimizer, owner: str = "method",
                  after_backward: Callable[[], None] | None = None) -> dict[str, float]:
    """total = sum_k weights[k] * terms[k]; backward; `after_backward()` if given (several processes: the
    mean of their gradients, pipeline/distributed.py); one optimiser step. Returns every term and the total
    as floats. A term without a weight is a bug of its method, not a zero: it raises."""
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"{owner} returned terms without a weight: {sorted(unknown)}")
    total = sum(weights[k] * v for k, v in terms.items())
    # The terms may come from a bf16 autocast region (runtime.precision); backward and the step run here,
    # outside it, on fp32 weights. No GradScaler: bf16 has fp32's exponent range, so no gradient underflows
    # as in fp16 (pipeline/runtime.py, `autocast`).
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return {k: v.item() for k, v in terms.items()} | {"total": total.item()}


def run_steps(order: Iterable[Any], steps: int, step: StepFn, schedule: torch.optim.lr_scheduler.LRScheduler,
              live=None, desc: str = "train", log_lr: bool = True, progress: bool = True) -> dict[str, float]:
    """Call `step(i, indices)` for each batch of `order` (a progress bar of `steps`), advance the schedule after
    each, and log what the step returns as `loss/<name>` (and the rate that step trained with) through
    DVCLive, against the step number: every step, or every k-th and the last where `steps` would give more
    than MAX_CURVE_POINTS points. `progress`: show the bar (with several processes, rank 0 alone does).
    A non-finite value among them stops the run (`Diverged`, naming `desc`, the step and the term) before
    anything is logged or written. Returns the last step's values."""
    logged: dict[str, float] = {}
    every = max(1, math.ceil(steps / MAX_CURVE_POINTS))
    for i, indices in enumerate(tqdm(order, total=steps, desc=desc, disable=not progress)):
        lr = schedule.get_last_lr()[0]  # the rate this step trains with
        logged = step(i, indices)
        check_finite(logged, i, desc)
        schedule.step()
        if live is not None and (i % every == 0 or i == steps - 1):
            live.step = i
            for key, value in logged.items():
                live.log_metric(f"loss/{key}", value, plot=True)
            if log_lr:
                live.log_metric("lr", lr)
            live.next_step()
    return logged


def check_finite(values: dict[str, float], step: int, desc: str) -> None:
    """Raise `Diverged` naming the first non-finite term (the weighted total last: a term explains it better).
    The values are the floats a step already returns, so the check costs no device synchronisation."""
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        term = next((k for k in bad if k != "total"), bad[0])
        raise Diverged(f"{desc}: loss term {term!r} is {values[term]} at step {step}; nothing was written "
                       f"(a learning rate, loss weight or temperature too large for this run?)")
