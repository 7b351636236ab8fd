"""Learning-to-learn of the feature-wise transformation layers (spec step 4; the patent's "first training").

Tseng et al., "Cross-domain few-shot classification via learned feature-wise transformation" (ICLR 2020),
Algorithm 1, with the model weights theta_model and the FT hyperparameters theta = (theta_gamma, theta_beta):

    L_seen   = loss(model(x_seen; theta_model, theta))                 FT layers on
    theta'   = theta_model - inner_lr * grad_{theta_model} L_seen       graph kept (create_graph)
    L_unseen = loss(model(x_unseen; theta'))                            FT layers off
    theta_model <- model_optimizer step with grad_{theta_model} L_seen
    theta       <- ft_optimizer step with grad_theta L_unseen           (only through theta')

With FT off, L_unseen depends on theta only through the look-ahead, so theta learns the perturbation that
makes a step on seen classes generalise to unseen ones. That gradient is proportional to ``inner_lr``;
Tseng et al. use Adam for theta, which is insensitive to that scale.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from pipeline.models.student_blocks import ft_disabled

Batch = Sequence[Any]
LossOnOutput = Callable[[Any, Batch], Tensor]


def split_classes(
    num_classes: int, n_unseen: int, generator: torch.Generator | None = None, n_seen: int | None = None
) -> tuple[Tensor, Tensor]:
    """Random (pseudo_seen, pseudo_unseen) class indices, two sorted disjoint int64 tensors.

    ``n_unseen`` classes are held out; ``n_seen`` of the rest are pseudo-seen (None: all the rest). The
    patent's episodes use 4 seen and 1 unseen. Call again each iteration to redraw the split.
    """
    n_seen = num_classes - n_unseen if n_seen is None else n_seen
    if n_unseen < 1 or n_seen < 1 or n_seen + n_unseen > num_classes:
        raise ValueError(
            f"need n_unseen >= 1, n_seen >= 1 and n_seen + n_unseen <= num_classes; "
            f"got n_seen={n_seen}, n_unseen={n_unseen}, num_classes={num_classes}"
        )
    perm = torch.randperm(num_classes, generator=generator)
    return perm[n_unseen : n_unseen + n_seen].sort().values, perm[:n_unseen].sort().values


def learning_to_learn_step(
    model: nn.Module,
    loss_fn: LossOnOutput,
    seen_batch: Batch,
    unseen_batch: Batch,
    inner_lr: float,
    model_optimizer: torch.optim.Optimizer,
    ft_optimizer: torch.optim.Optimizer,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
) -> dict[str, float]:
    """One iteration of Tseng et al.'s Algorithm 1 (see the module docstring); puts ``model`` in train mode.

    Args:
        model: has ``ft_parameters()`` (the thetas) and FT layers that ``ft_disabled`` switches off, e.g. a
            ``DistillationStudent`` with ``ft_layers=True``.
        loss_fn: ``(model_output, batch) -> scalar``; e.g. a closure applying ``soft_distillation`` to
            ``model_output = (z_s, z_d)`` and the batch's labels and teacher logits.
        seen_batch, unseen_batch: sequences whose first element is the model input (images); the whole batch
            is passed on to ``loss_fn``. Drawn by the caller from the pseudo-seen / pseudo-unseen classes.
        inner_lr: step size of the look-ahead.
        model_optimizer: over the model weights (``model.model_parameters()``).
        ft_optimizer: over the thetas (``model.ft_parameters()``).
        autocast: the context of the two forward passes and losses (``DistillContext.autocast``: bf16
            autocast, or none); the gradients and the optimiser steps run outside it.
    Returns:
        {"seen": L_seen, "unseen": L_unseen} as floats.
    """
    ft_params = list(model.ft_parameters())
    if not ft_params:
        raise ValueError("learning-to-learn needs FT layers (StudentConfig.ft_layers=True)")
    ft_ids = {id(p) for p in ft_params}
    named = [(n, p) for n, p in model.named_parameters() if id(p) not in ft_ids and p.requires_grad]
    model.train()

    # (1) pseudo-seen loss, FT layers on.
    with autocast():
        loss_seen = loss_fn(model(seen_batch[0]), seen_batch)
    # (2) look-ahead, keeping the graph so theta' is a function of theta. Unused parameters get no grad and
    # are carried over unchanged.
    grads = torch.autograd.grad(loss_seen, [p for _, p in named], create_graph=True, allow_unused=True)
    looked_ahead = {n: p if g is None else p - inner_lr * g for (n, p), g in zip(named, grads)}
    # (3) pseudo-unseen loss, FT layers off, with the looked-ahead weights (buffers and thetas: the module's).
    with ft_disabled(model), autocast():
        params = {**dict(model.named_buffers()), **looked_ahead}
        loss_unseen = loss_fn(functional_call(model, params, (unseen_batch[0],)), unseen_batch)
    ft_grads = torch.autograd.grad(loss_unseen, ft_params, allow_unused=True)

    # (4) model weights <- grad of L_seen (first order); thetas <- grad of L_unseen through the look-ahead.
    model_optimizer.zero_grad(set_to_none=True)
    ft_optimizer.zero_grad(set_to_none=True)
    for (_, p), g in zip(named, grads):
        if g is not None:
            p.grad = g.detach()
    for p, g in zip(ft_params, ft_grads):
        if g is not None:
            p.grad = g
    model_optimizer.step()
    ft_optimizer.step()
    return {"seen": float(loss_seen.detach()), "unseen": float(loss_unseen.detach())}
