"""How the continual branch feeds the project's one trainer (pipeline/training.py) for a task: the seeded batch
order of the task (each process's share of it with several), the loader's prefetched (and, with
`train.augment`, augmented) images, the `train` recipe's optimiser and schedule, and, with several processes,
the student's forward inside DistributedDataParallel (pipeline/distributed.py)."""
from __future__ import annotations

from functools import partial

import torch

from pipeline import distributed, optim, runtime
from pipeline.continual.base import Method, set_train_mode
from pipeline.data import loader
from pipeline.data.augment import RandomResizedCropBatch
from pipeline.runtime import stable_seed
from pipeline.training import Batch, Trainer

__all__ = ["make_batch", "prepare", "set_train_mode", "train_task"]


def make_batch(method: Method, item: tuple[torch.Tensor, torch.Tensor | None]) -> Batch:
    """The batch of `item` = (indices, images): the training images at `indices` (this rank's share of the
    global batch, with several processes; `images`: those images as the loader made them, None: sliced here
    from an in-memory task), their labels and indices, on the device."""
    ctx = method.ctx
    indices, images = item
    images = runtime.to_device(ctx.task.train_images[indices] if images is None else images, ctx.device)
    labels = runtime.to_device(ctx.task.train_labels[indices], ctx.device)
    return Batch(images, labels, runtime.to_device(indices, ctx.device))


def global_order(num_items: int, train, task: str) -> list[torch.Tensor]:
    """The task's global index batches: seeded by `train.seed` and the task alone, so every method and every
    rank draws the same ones, whatever the number of processes (each rank then takes its `shard`)."""
    return list(optim.batches(num_items, train.batch_size, train.steps, stable_seed(train.seed, task)))


def prepare(method: Method) -> Trainer:
    """The trainer of `method` on its task: the student in training mode (BatchNorm as `train.freeze_bn` says,
    the logit scale frozen), the `train` recipe's AdamW with the warm-up + cosine schedule, and the task's
    batches. The batch order depends on the seed and the task only, so methods see the same batches; with
    several processes each takes its share of every batch (the global batch is the same for any
    runtime.nproc), the student's forward runs inside DistributedDataParallel (the mean of the gradients) and
    the logged values are their mean over ranks."""
    ctx, train = method.ctx, method.ctx.params.train
    order = [distributed.shard(indices) for indices in global_order(len(ctx.task.train_labels), train, ctx.name)]
    # The loader decodes the next batches in its workers while a step trains (runtime.workers; none: sliced here).
    # Random crops differ between ranks (each crops its own images): a seed per rank, one process's as before.
    augment_seed = distributed.rank_seed(stable_seed(train.seed, ctx.name, "augment"))
    augment = RandomResizedCropBatch(augment_seed) if train.augment else None
    items = zip(order, loader.batches(ctx.task.train_images, order, augment))
    trainer = Trainer.build(method, train, train.steps, items, partial(make_batch, method),
                            reduce=partial(distributed.mean_of, device=ctx.device))
    # DDP's default mode, not static_graph. LwM's Grad-CAM takes a gradient inside the step (torch.autograd.grad
    # with create_graph, with respect to the feature map the forward module returns): that runs no parameter's
    # gradient accumulation, so no DDP hook fires before the one backward of the total, and two processes match
    # one (tests/test_distributed.py). static_graph=True fails at LwM's first step: DDP then passes the module's
    # outputs through an autograd function of its own (_DDPSink), so the returned map is no longer an ancestor
    # of the features ("The differentiated Tensor ... appears to not have been used in the graph").
    method.student_forward = distributed.wrap(method.student_forward, ctx.device)
    return trainer


def train_task(method: Method, live=None) -> dict[str, float]:
    """Optimise the student of `method.ctx` for `train.steps` steps (the logit scale frozen, every term and
    the weighted total logged by name), then the method's end-of-task weight changes (`finish`); return the
    last step's terms as `loss/<name>`."""
    logged = prepare(method).fit(live, desc=f"train {method.ctx.name} ({method.name})", progress=distributed.is_main())
    logged.pop("step_seconds")  # wall time: never in the checkpoint's metadata, whose bytes depend on the params only
    return {f"loss/{k}": v for k, v in logged.items()}
