"""Training one task with any registered continual method, through the project's one loop (pipeline/training.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from pipeline import distributed, optim, runtime
from pipeline.continual.base import Method
from pipeline.data import loader
from pipeline.data.augment import RandomResizedCropBatch
from pipeline.runtime import stable_seed
from pipeline.training import run_steps, weighted_step


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Training mode, except (with `freeze_bn`) BatchNorm layers, which keep using E0's statistics: batch
    statistics of one task's small batches would drift E0's normalisation (a forgetting of its own) and make
    the student differ from E0 at the first step, where L_dis must be 0."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


@dataclass
class TaskTraining:
    """One task's optimisation, built by `prepare` and stepped by `train_task` (and by the GPU benchmark,
    pipeline/bench_gpu.py, which times `step`, so the step it times is the step trained)."""

    method: Method
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    weights: dict[str, float]
    # Between backward and the optimiser's step: the mean of the ranks' gradients (pipeline/distributed.py);
    # None with one process.
    after_backward: Callable[[], None] | None = None

    def step(self, indices: torch.Tensor, images: torch.Tensor | None = None) -> dict[str, float]:
        """One step on the training images at `indices` (this rank's share of the global batch, with several
        processes; `images`: those images as the loader made them, None: sliced here from an in-memory task):
        the method's terms (forward passes and losses under `runtime.precision`'s autocast, none in fp32),
        their weighted sum's backward and the optimiser step (outside it), then the method's `after_step`.
        The values returned are the global batch's (the mean over ranks)."""
        method, ctx = self.method, self.method.ctx
        images = runtime.to_device(ctx.task.train_images[indices] if images is None else images, ctx.device)
        labels = runtime.to_device(ctx.task.train_labels[indices], ctx.device)
        with ctx.autocast():
            terms = method.terms(images, labels, runtime.to_device(indices, ctx.device))
        logged = weighted_step(terms, self.weights, self.optimizer, owner=f"method {method.name!r}",
                               after_backward=self.after_backward)
        method.after_step()
        return distributed.mean_of(logged, ctx.device)


def prepare(method: Method) -> TaskTraining:
    """Put the student of `method.ctx` in training mode (BatchNorm as `train.freeze_bn` says), freeze its logit
    scale (ZSCL), and build AdamW with the warm-up + cosine schedule."""
    ctx, train = method.ctx, method.ctx.params.train
    model = ctx.student.model
    set_train_mode(model, train.freeze_bn)
    model.logit_scale.requires_grad_(False)
    optimizer, schedule = optim.from_recipe(model.parameters(), train, train.steps)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sync = (lambda: distributed.average_gradients(params)) if distributed.world_size() > 1 else None
    return TaskTraining(method, optimizer, schedule, method.weights(), sync)


def train_task(method: Method, live=None) -> dict[str, float]:
    """Optimise the student of `method.ctx` for `train.steps` steps through the project's one loop
    (pipeline/training.py); return the last step's terms as `loss/<name>`.

    The logit scale stays frozen (ZSCL); every term and the weighted total are logged by name."""
    ctx, train = method.ctx, method.ctx.params.train
    run = prepare(method)
    # The batch order depends on the seed and the task only, so methods see the same batches; with several
    # processes, each takes its share of every batch (the global batch is the same for any runtime.nproc).
    order = [distributed.shard(indices) for indices in
             optim.batches(len(ctx.task.train_labels), train.batch_size, train.steps, stable_seed(train.seed, ctx.name))]
    # The loader decodes the next batches in its workers while a step trains (runtime.workers; none: sliced here).
    augment = RandomResizedCropBatch(stable_seed(train.seed, ctx.name, "augment")) if train.augment else None
    batches = zip(order, loader.batches(ctx.task.train_images, order, augment))
    logged = run_steps(batches, train.steps, lambda _, batch: run.step(*batch), run.schedule, live,
                       desc=f"train {ctx.name} ({method.name})", progress=distributed.is_main())
    with torch.no_grad():
        method.finish()  # end-of-task weight changes (weight ensembles, interpolation); see Method.finish
    ctx.student.model.eval()
    return {f"loss/{k}": v for k, v in logged.items()}
