"""Optimisers and learning-rate schedule shared by pretraining, continual training and the compression branch."""
from __future__ import annotations

import math

import torch


def adamw(parameters, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without decay on gains, biases and embeddings' scale-like 1-D parameters (as CLIP trains)."""
    params = [p for p in parameters if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one vectorised kernel per group. On CPU, torch's default (a Python loop over the tensors) and
    # foreach (a C++ loop of per-tensor ops, 5-6 ops per tensor) each walk the weights several times; the CLIP
    # models' 6.3 M-row token embedding (77 % of their 8.3 M weights, updated every step although a batch
    # touches a few hundred rows) made the optimiser ~50 of a ~230 ms pretraining step with foreach, ~12 with
    # fused. The same update, rounded differently (foreach matched the loop's bytes; fused does not).
    return torch.optim.AdamW(groups, lr=lr, fused=True)


def sgd(parameters, lr: float, weight_decay: float, momentum: float) -> torch.optim.SGD:
    """SGD with Nesterov momentum and weight decay on every parameter: the CIFAR recipe of the MCL authors
    (`main_cifar.py`: momentum 0.9, weight decay 5e-4, Nesterov; gains and biases decayed too)."""
    return torch.optim.SGD([p for p in parameters if p.requires_grad], lr=lr, momentum=momentum,
                           weight_decay=weight_decay, nesterov=momentum > 0)


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the base rate, then cosine decay to zero at `total_steps` (ZSCL's schedule)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def from_recipe(parameters, recipe, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimiser and the warm-up + cosine schedule of every training in the project, from its recipe
    section (`pretrain`, `train`, `teacher`, `distill`, `cohort`): `optimizer` (adamw where the section has
    no such key), `lr`, `weight_decay`, `momentum` (sgd only) and `warmup_steps` (None: a twentieth of
    `steps`, at least one), over `steps` steps."""
    if getattr(recipe, "optimizer", "adamw") == "sgd":
        optimizer = sgd(parameters, recipe.lr, recipe.weight_decay, recipe.momentum)
    else:
        optimizer = adamw(parameters, recipe.lr, recipe.weight_decay)
    warmup = recipe.warmup_steps if recipe.warmup_steps is not None else max(1, steps // 20)
    return optimizer, warmup_cosine(optimizer, warmup, steps)


def batches(num_items: int, batch_size: int, steps: int, seed: int):
    """`steps` index batches drawn epoch by epoch from seeded permutations (the last partial batch of an
    epoch is dropped so every step sees `batch_size` items, unless the set is smaller than a batch)."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, num_items)
    done = 0
    while True:
        perm = torch.randperm(num_items, generator=generator)
        for start in range(0, num_items - size + 1, size):
            if done == steps:
                return
            yield perm[start : start + size]
            done += 1
