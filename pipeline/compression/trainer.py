"""How the compression branch feeds the project's one trainer (pipeline/training.py) for every network it trains
(the CNN teacher, each method's student, the student alone, a cohort): seeded batches by epoch, random flips
and crops drawn from the run's one stream, the recipe's optimiser (AdamW or SGD) with warm-up and cosine decay.

Several processes (pipeline/distributed.py): every rank draws the same global batch and the same flips and
crops for it (the one stream, advanced alike on every rank), then takes its slice; the student (or the
cohort) trains inside DistributedDataParallel, with SyncBatchNorm on CUDA."""
from __future__ import annotations

from functools import partial

from torch import Tensor

from pipeline import distributed, runtime
from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillMethod
from pipeline.errors import InputError
from pipeline.models.classifier import image_input
from pipeline.training import Trainer


def make_batch(method: DistillMethod, indices: Tensor) -> Batch:
    """The step's batch: its images (flipped where drawn, then cropped where the recipe crops), labels,
    indices and flips; flips are drawn from the run's stream first, then the crops' corners, for the global
    batch `indices`, of which this rank keeps its slice (one process: all of it)."""
    ctx, recipe = method.ctx, method.ctx.params
    flips = D.random_flips(len(indices), ctx.generator, recipe.flip)
    corners = D.random_crops(len(indices), recipe.crop_padding, ctx.generator) if recipe.crop_padding else None
    indices, flips = distributed.shard(indices), distributed.shard(flips)
    labels = runtime.to_device(ctx.task.train_labels[indices], ctx.device)
    if not recipe.crop_padding:
        x = D.apply_flips(image_input(runtime.to_device(ctx.task.train_images[indices], ctx.device)), flips)
        return Batch(x, labels, indices, flips)
    corners = distributed.shard(corners)
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
    trainer = Trainer.build(method, recipe, steps, order, partial(make_batch, method),
                            per_epoch=max(1, steps // recipe.epochs), reduce=partial(distributed.mean_of, device=ctx.device))
    if distributed.world_size() > 1 and not method.runs_distributed:
        raise InputError(f"runtime.nproc: method {method.name!r} runs in one process only (it trains outside its "
                         f"one forward module: added modules, forward hooks or a second update)")
    # One process: the student itself. static_graph: the same graph every step, in which some parameters never
    # take part (the token student's last block computes the special tokens' rows alone, so its patch-grid
    # convolutions get no gradient): DDP finds them in the first step instead of waiting for their gradients.
    method.net = distributed.wrap(ctx.student, ctx.device, sync_batchnorm=True, static_graph=True)
    return trainer


def fit(method: DistillMethod, live=None, desc: str = "train") -> dict[str, float]:
    """Train `method.ctx.student` (and the method's added modules) in place for `epochs` passes; returns the
    last step's logged values plus `step_seconds`, the wall time per step over the whole run (epoch-wise work
    such as rematching included, amortised)."""
    return prepare(method).fit(live, desc=desc, progress=distributed.is_main())
