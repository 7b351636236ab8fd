"""The loop that trains one task with any registered method."""
from __future__ import annotations

import torch
from tqdm import tqdm

from pipeline import optim
from pipeline.continual.base import Method
from pipeline.runtime import stable_seed


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
    """Optimise the student of `method.ctx` for `train.steps` steps; return the last step's terms.

    The logit scale stays frozen (ZSCL); every term and the weighted total are logged by name."""
    ctx, train = method.ctx, method.ctx.params.train
    model = ctx.student.model
    set_train_mode(model, train.freeze_bn)
    model.logit_scale.requires_grad_(False)
    optimizer = optim.adamw(model.parameters(), train.lr, train.weight_decay)
    schedule = optim.warmup_cosine(optimizer, train.warmup_steps, train.steps)
    weights = method.weights()
    images, labels = ctx.task.train_images, ctx.task.train_labels
    # The batch order depends on the seed and the task only, so methods see the same batches.
    order = optim.batches(len(labels), train.batch_size, train.steps, stable_seed(train.seed, ctx.name))
    logged: dict[str, float] = {}
    for indices in tqdm(order, total=train.steps, desc=f"train {ctx.name} ({method.name})"):
        terms = method.terms(images[indices].to(ctx.device), labels[indices].to(ctx.device), indices.to(ctx.device))
        unknown = set(terms) - set(weights)
        if unknown:
            raise KeyError(f"method {method.name!r} returned terms without a weight: {sorted(unknown)}")
        total = sum(weights[k] * v for k, v in terms.items())
        lr = schedule.get_last_lr()[0]  # the rate this step trains with
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        method.after_step()
        logged = {f"loss/{k}": v.item() for k, v in terms.items()} | {"loss/total": total.item()}
        if live is not None:
            for key, value in logged.items():
                live.log_metric(key, value, plot=True)
            live.log_metric("lr", lr)
            live.next_step()
    with torch.no_grad():
        method.finish()  # end-of-task weight changes (weight ensembles, interpolation); see Method.finish
    model.eval()
    return logged
