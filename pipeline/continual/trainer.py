"""Training one task with any registered continual method, through the project's one loop (pipeline/training.py)."""
from __future__ import annotations

import torch

from pipeline import optim
from pipeline.continual.base import Method
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


def train_task(method: Method, live=None) -> dict[str, float]:
    """Optimise the student of `method.ctx` for `train.steps` steps through the project's one loop
    (pipeline/training.py); return the last step's terms as `loss/<name>`.

    The logit scale stays frozen (ZSCL); every term and the weighted total are logged by name."""
    ctx, train = method.ctx, method.ctx.params.train
    model = ctx.student.model
    set_train_mode(model, train.freeze_bn)
    model.logit_scale.requires_grad_(False)
    optimizer = optim.adamw(model.parameters(), train.lr, train.weight_decay)
    schedule = optim.warmup_cosine(optimizer, train.warmup_steps, train.steps)
    weights = method.weights()
    images, labels = ctx.task.train_images, ctx.task.train_labels

    def step(_: int, indices: torch.Tensor) -> dict[str, float]:
        terms = method.terms(images[indices].to(ctx.device), labels[indices].to(ctx.device), indices.to(ctx.device))
        logged = weighted_step(terms, weights, optimizer, owner=f"method {method.name!r}")
        method.after_step()
        return logged

    # The batch order depends on the seed and the task only, so methods see the same batches.
    order = optim.batches(len(labels), train.batch_size, train.steps, stable_seed(train.seed, ctx.name))
    logged = run_steps(order, train.steps, step, schedule, live, desc=f"train {ctx.name} ({method.name})")
    with torch.no_grad():
        method.finish()  # end-of-task weight changes (weight ensembles, interpolation); see Method.finish
    model.eval()
    return {f"loss/{k}": v for k, v in logged.items()}
