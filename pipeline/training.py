"""The one training engine of the project: the method contract every training implements (E0's contrastive
pretraining, each continual task, the compression branch's CNN teacher, students and cohorts), the `Trainer`
that runs it (the optimiser and warm-up + cosine schedule from the recipe section, pipeline/optim.py), and the
loop: named loss terms, their weighted sum, one step of the optimiser and the schedule, every term logged by
name. Methods differ in the terms they return and, where a method needs another update (learning-to-learn),
in their step; never in the loop. Each branch says only how its batches are made (which items, which random
draws) and builds its methods' inputs (pipeline/continual/trainer.py, pipeline/compression/trainer.py,
pipeline/pretraining.py)."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pipeline import optim
from pipeline.errors import Diverged

Terms = dict[str, Tensor]
StepFn = Callable[[int, Any], dict[str, float]]  # (step, batch: its indices, or whatever `order` yields) -> logged values
# Points per training curve at most. DVCLive's next_step re-reads every curve's whole TSV (dvclive 3.49:
# sync -> post_data_to_studio -> parse_metrics, even with Studio off), so logging every step costs O(steps^2):
# 8.6 ms a step averaged over 1,260 steps here, 11 s of a token student's 112 s training.
MAX_CURVE_POINTS = 200


def weighted_step(terms: Terms, weights: dict[str, float], optimizer: torch.optim.Optimizer,
                  owner: str = "method") -> dict[str, float]:
    """total = sum_k weights[k] * terms[k]; backward (several processes: DistributedDataParallel averages the
    gradients during it, pipeline/distributed.py); one optimiser step. Returns every term and the total as
    floats. A term without a weight is a bug of its method, not a zero: it raises."""
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"{owner} returned terms without a weight: {sorted(unknown)}")
    total = sum(weights[k] * v for k, v in terms.items())
    # The terms may come from a bf16 autocast region (runtime.precision); backward and the step run here,
    # outside it, on fp32 weights. No GradScaler: bf16 has fp32's exponent range, so no gradient underflows
    # as in fp16 (pipeline/runtime.py, `autocast`).
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {k: v.item() for k, v in terms.items()} | {"total": total.item()}


def run_steps(order: Iterable[Any], steps: int, step: StepFn, schedule: torch.optim.lr_scheduler.LRScheduler,
              live=None, desc: str = "train", log_lr: bool = True, progress: bool = True,
              curves: Callable[[], dict[str, float]] | None = None) -> dict[str, float]:
    """Call `step(i, indices)` for each batch of `order` (a progress bar of `steps`), advance the schedule after
    each, and log what the step returns as `loss/<name>` (and the rate that step trained with) through
    DVCLive, against the step number: every step, or every k-th and the last where `steps` would give more
    than MAX_CURVE_POINTS points; `curves()`, where given, adds values logged under their own names
    (pretraining's logit scale). `progress`: show the bar (with several processes, rank 0 alone does).
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
            for key, value in (curves() if curves is not None else {}).items():
                live.log_metric(key, value)
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


@dataclass
class Batch:
    """One step's batch, as a branch's trainer makes it for the method."""

    images: Tensor  # (B, 3, H, W) network input, on the device
    labels: Tensor | None  # (B,) int64 on the device; None where there are none (contrastive pretraining)
    indices: Tensor  # (B,) positions in the training set (cached teacher outputs are looked up by them)
    flips: Tensor | None = None  # (B,) bool: which images are mirrored (compression branch)
    # (B, 3, H, W) uint8: the augmented images before normalisation, when the recipe crops (`crop_padding`); None
    # when flips are the only augmentation and a teacher's outputs are looked up by index and flip
    pixels: Tensor | None = None


class Method:
    """The method contract of every training: named loss terms per step (`terms`), weighted by `weights()`.

    A method says what the optimiser trains (`parameters`, after `train_mode`), and may keep state updated in
    `after_step` (buffers, not parameters), refreshed each epoch (`on_epoch`), started once the optimiser
    exists (`start`), changed at the end of the training (`finish`: weight ensembles, interpolation) and
    saved beside the model (`state`); a method that needs another update than one step of the weighted sum
    (learning-to-learn, a meta-network) overrides `step`, never the loop."""

    name: ClassVar[str]

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def terms(self, batch: Batch) -> Terms:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains (those that require no gradient are left out by pipeline/optim.py)."""
        raise NotImplementedError

    def train_mode(self) -> None:
        """Put what trains in training mode (and on the device), before the optimiser is built."""

    def eval_mode(self) -> None:
        """Put what trained in eval mode, after the last step and `finish`."""

    def autocast(self):
        """The context of the forward passes and losses (`runtime.precision`'s; none here)."""
        return contextlib.nullcontext()

    def start(self, optimizer: torch.optim.Optimizer, steps: int) -> None:
        """Called once before the first step (the optimiser over `parameters()` exists by then)."""

    def on_epoch(self, epoch: int) -> None:
        """Called before the first step of every epoch (0, 1, ...), where the trainer has epochs."""

    def step(self, step: int, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One update: the weighted sum of `terms` (computed under `autocast()`; backward and the optimiser
        step outside it), one optimiser step. A method overriding this runs its own forward passes under
        `autocast()` too."""
        with self.autocast():
            terms = self.terms(batch)
        return weighted_step(terms, self.weights(), optimizer, owner=f"method {self.name!r}")

    def after_step(self) -> None:
        """Called after every optimiser step."""

    def finish(self) -> None:
        """Called once after the last step, under no_grad, before `eval_mode`: the place for changes of the
        trained weights themselves (ZSCL's weight ensemble, WiSE-FT's interpolation)."""

    def curves(self) -> dict[str, float]:
        """Values logged beside the loss terms under their own names (pretraining's logit scale)."""
        return {}

    def state(self) -> dict[str, Tensor]:
        """Tensors saved beside the trained model (for inspection; inference never needs them)."""
        return {}


@dataclass
class Trainer:
    """One training of a method: the optimiser and schedule over `method.parameters()`, the order of items
    (`order`: one per step) and how an item becomes a batch (`batch`, the branch's: images to the device,
    random flips and crops). Built by `Trainer.build`; `fit` runs it, `step` is one step (what the
    benchmarks time, so the step they time is the step trained)."""

    method: Method
    steps: int
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    order: Iterable[Any]
    batch: Callable[[Any], Batch]
    per_epoch: int | None = None  # steps per epoch: `method.on_epoch` runs before the first step of each
    # The logged values of a step as the global batch's (several processes: their mean over ranks).
    reduce: Callable[[dict[str, float]], dict[str, float]] | None = None

    @classmethod
    def build(cls, method: Method, recipe, steps: int, order: Iterable[Any], batch: Callable[[Any], Batch],
              **kw) -> "Trainer":
        """`method` in training mode, the optimiser and schedule of `recipe` (optim.from_recipe) over `steps`
        steps, the method started."""
        method.train_mode()
        optimizer, schedule = optim.from_recipe(method.parameters(), recipe, steps)
        method.start(optimizer, steps)
        return cls(method, steps, optimizer, schedule, order, batch, **kw)

    def step(self, i: int, item: Any) -> dict[str, float]:
        """Step `i` on `item` of the order: the method's epoch hook where an epoch starts, its batch, its
        step and `after_step`. Returns the logged values (the global batch's)."""
        method = self.method
        if self.per_epoch and i % self.per_epoch == 0:
            method.on_epoch(i // self.per_epoch)
        logged = method.step(i, self.batch(item), self.optimizer)
        method.after_step()
        return logged if self.reduce is None else self.reduce(logged)

    def fit(self, live=None, desc: str = "train", progress: bool = True) -> dict[str, float]:
        """Every step through the loop (`run_steps`: schedule, logging), then the method's `finish` (under
        no_grad) and eval mode. Returns the last step's logged values plus `step_seconds`, the wall time per
        step over the whole run (epoch-wise work amortised)."""
        start = time.perf_counter()
        logged = run_steps(self.order, self.steps, self.step, self.schedule, live, desc=desc, progress=progress,
                           curves=self.method.curves)
        seconds = time.perf_counter() - start
        with torch.no_grad():
            self.method.finish()
        self.method.eval_mode()
        return logged | {"step_seconds": seconds / self.steps}


class Inputs:
    """What a method of either branch is given, the one context type of the engine: a frozen dataclass deriving
    from this (pipeline/continual/inputs.py `TaskInputs`, pipeline/compression/base.py `DistillContext`) that
    holds values, tensors and models built by its stage (nothing in it reads a file), among them the `device`
    and the `precision` (runtime.precision) of the method's forward passes."""

    device: torch.device
    precision: str

    def autocast(self):
        """The context of forward passes and losses: `runtime.precision`'s (none at all in fp32)."""
        from pipeline import runtime  # lazy only to keep this addition apart from the imports other work edits

        return runtime.autocast(self.device, self.precision)
