"""How the compression branch feeds the project's one trainer (pipeline/training.py) for every network it trains
(the CNN teacher, each method's student, the student alone, a cohort): seeded batches by epoch, random flips
and crops drawn from the run's one stream, the recipe's optimiser (AdamW or SGD) with warm-up and cosine decay."""
from __future__ import annotations

from functools import partial

from torch import Tensor

from pipeline import runtime
from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillMethod
from pipeline.models.classifier import image_input
from pipeline.training import Trainer


def make_batch(method: DistillMethod, indices: Tensor) -> Batch:
    """The step's batch: its images (flipped where drawn, then cropped where the recipe crops), labels,
    indices and flips; flips are drawn from the run's stream first, then the crops' corners."""
    ctx, recipe = method.ctx, method.ctx.params
    flips = D.random_flips(len(indices), ctx.generator, recipe.flip)
    labels = runtime.to_device(ctx.task.train_labels[indices], ctx.device)
    if not recipe.crop_padding:
        x = D.apply_flips(image_input(runtime.to_device(ctx.task.train_images[indices], ctx.device)), flips)
        return Batch(x, labels, indices, flips)
    corners = D.random_crops(len(indices), recipe.crop_padding, ctx.generator)  # drawn after the flips
    pixels = D.apply_flips(D.apply_crops(runtime.to_device(ctx.task.train_images[indices], ctx.device), corners,
                                         recipe.crop_padding), flips)
    return Batch(image_input(pixels), labels, indices, flips, pixels)


def prepare(method: DistillMethod) -> Trainer:
    """The trainer of `method` on `method.ctx.task`: `recipe.epochs` passes of seeded batches (`recipe.balance`:
    class-balanced where it says so), `method.on_epoch` before each, the recipe's optimiser and schedule."""
    ctx, recipe = method.ctx, method.ctx.params
    labels = ctx.task.train_labels
    steps = D.steps_for(len(labels), recipe.batch_size, recipe.epochs)
    order = D.batches(labels, recipe.batch_size, steps, recipe.seed, recipe.balance, getattr(recipe, "per_class", 2))
    return Trainer.build(method, recipe, steps, order, partial(make_batch, method), per_epoch=max(1, steps // recipe.epochs))


def fit(method: DistillMethod, live=None, desc: str = "train") -> dict[str, float]:
    """Train `method.ctx.student` (and the method's added modules) in place for `epochs` passes; returns the
    last step's logged values plus `step_seconds`, the wall time per step over the whole run (epoch-wise work
    such as rematching included, amortised)."""
    return prepare(method).fit(live, desc=desc)
