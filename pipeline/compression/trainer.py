"""The one loop that trains every network of the compression branch (the CNN teacher, each method's student,
the student alone): seeded batches and flips, AdamW (or SGD) with warm-up and cosine decay, the method's step."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline import optim, runtime
from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillMethod
from pipeline.models.classifier import image_input
from pipeline.training import run_steps


@dataclass
class Training:
    """What one training of a method needs besides its steps: built by `prepare`, run by `fit` (and by the step
    benchmark, pipeline/bench_steps.py, which times `method.step` on these batches)."""

    method: DistillMethod
    steps: int
    per_epoch: int  # steps per epoch: `method.on_epoch` runs before the first step of each
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    order: Iterator[Tensor]  # each step's training-set indices

    def batch(self, indices: Tensor) -> Batch:
        """The step's batch: its images (flipped where drawn), labels, indices and flips."""
        ctx, recipe = self.method.ctx, self.method.ctx.params
        flips = D.random_flips(len(indices), ctx.generator, recipe.flip)
        labels = runtime.to_device(ctx.task.train_labels[indices], ctx.device)
        if not recipe.crop_padding:
            x = D.apply_flips(image_input(runtime.to_device(ctx.task.train_images[indices], ctx.device)), flips)
            return Batch(x, labels, indices, flips)
        corners = D.random_crops(len(indices), recipe.crop_padding, ctx.generator)  # drawn after the flips
        pixels = D.apply_flips(D.apply_crops(runtime.to_device(ctx.task.train_images[indices], ctx.device), corners,
                                             recipe.crop_padding), flips)
        return Batch(image_input(pixels), labels, indices, flips, pixels)


def prepare(method: DistillMethod) -> Training:
    """Put the student (and the method's added modules) in training mode; the optimiser (`recipe.optimizer` over
    `method.parameters()`), the warm-up + cosine schedule, the method's start and the seeded batches."""
    ctx, recipe = method.ctx, method.ctx.params
    labels = ctx.task.train_labels
    steps = D.steps_for(len(labels), recipe.batch_size, recipe.epochs)
    ctx.student.to(ctx.device).train()
    method.added.to(ctx.device).train()
    optimizer, schedule = optim.from_recipe(method.parameters(), recipe, steps)
    method.start(optimizer, steps)
    order = D.batches(labels, recipe.batch_size, steps, recipe.seed, recipe.balance, getattr(recipe, "per_class", 2))
    return Training(method, steps, max(1, steps // recipe.epochs), optimizer, schedule, order)


def fit(method: DistillMethod, live=None, desc: str = "train") -> dict[str, float]:
    """Train `method.ctx.student` (and the method's added modules) in place for `epochs` passes; returns the
    last step's logged values plus `step_seconds`, the wall time per step over the whole run (epoch-wise work
    such as rematching included, amortised)."""
    run = prepare(method)

    def step(i: int, indices: Tensor) -> dict[str, float]:
        if i % run.per_epoch == 0:
            method.on_epoch(i // run.per_epoch)
        return method.step(i, run.batch(indices), run.optimizer)

    start = time.perf_counter()
    logged = run_steps(run.order, run.steps, step, run.schedule, live, desc=desc)
    seconds = time.perf_counter() - start
    method.ctx.student.eval()
    method.added.eval()
    return logged | {"step_seconds": seconds / run.steps}
