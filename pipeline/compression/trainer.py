"""The one loop that trains every network of the compression branch (the CNN teacher, each method's student,
the student alone): seeded batches and flips, AdamW with warm-up and cosine decay, the method's step."""
from __future__ import annotations

import time

import torch

from pipeline import optim
from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillMethod
from pipeline.models.classifier import image_input
from pipeline.training import run_steps


def fit(method: DistillMethod, live=None, desc: str = "train") -> dict[str, float]:
    """Train `method.ctx.student` (and the method's added modules) in place for `epochs` passes; returns the
    last step's logged values plus `step_seconds`, the wall time per step over the whole run (epoch-wise work
    such as rematching included, amortised)."""
    ctx, recipe = method.ctx, method.ctx.params
    labels = ctx.task.train_labels
    steps = D.steps_for(len(labels), recipe.batch_size, recipe.epochs)
    per_epoch = max(1, steps // recipe.epochs)
    ctx.student.to(ctx.device).train()
    method.added.to(ctx.device).train()
    optimizer = optim.adamw(method.parameters(), recipe.lr, recipe.weight_decay)
    warmup = recipe.warmup_steps if recipe.warmup_steps is not None else max(1, steps // 20)
    schedule = optim.warmup_cosine(optimizer, warmup, steps)
    method.start(optimizer, steps)
    images = ctx.task.train_images

    def step(i: int, indices: torch.Tensor) -> dict[str, float]:
        if i % per_epoch == 0:
            method.on_epoch(i // per_epoch)
        flips = D.random_flips(len(indices), ctx.generator, recipe.flip)
        x = D.apply_flips(image_input(images[indices].to(ctx.device)), flips)
        return method.step(i, Batch(x, labels[indices].to(ctx.device), indices, flips), optimizer)

    order = D.batches(labels, recipe.batch_size, steps, recipe.seed, recipe.balance, getattr(recipe, "per_class", 2))
    start = time.perf_counter()
    logged = run_steps(order, steps, step, schedule, live, desc=desc)
    seconds = time.perf_counter() - start
    ctx.student.eval()
    method.added.eval()
    return logged | {"step_seconds": seconds / steps}
