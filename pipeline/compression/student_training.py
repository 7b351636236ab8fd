"""Training the distillation-token student (spec steps 4 and 6): soft or hard distillation from the teacher's
logits, or the labels alone for the same student without distillation; the FT layers' theta learned by
learning-to-learn every `l2l_every` steps (l2l.py), the model weights by AdamW on every step."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from pipeline import optim
from pipeline.config import DistillParams
from pipeline.data import TaskData
from pipeline.compression import data as D
from pipeline.compression.l2l import learning_to_learn_step, split_classes
from pipeline.losses import hard_distillation, soft_distillation, student_ce
from pipeline.models.classifier import image_input
from pipeline.models.student import DistillationStudent
from pipeline.errors import InputError

Objective = Callable[[tuple[Tensor, Tensor], tuple], Tensor]


def objective(dp: DistillParams, distil: bool) -> Objective:
    """(model output (z_s, z_d), batch (x, y, z_t)) -> loss; z_t is ignored without distillation."""
    if not distil:
        return lambda out, batch: student_ce(out[0], out[1], batch[1])
    if dp.mode == "hard":
        return lambda out, batch: hard_distillation(out[0], out[1], batch[2], batch[1])
    return lambda out, batch: soft_distillation(out[0], out[1], batch[2], batch[1], dp.lam, dp.tau)


def train_student(model: DistillationStudent, task: TaskData, dp: DistillParams, teacher_logits: Tensor | None,
                  device: torch.device, live=None, desc: str = "student") -> dict[str, float]:
    """Train `model` in place. `teacher_logits` (2, N, K) from teachers.training_logits, or None for the
    student without distillation (same batches, flips and class splits: everything but the teacher is
    equal). Returns the last step's losses."""
    labels = task.train_labels
    num_classes = len(task.classes)
    use_l2l = dp.l2l and bool(model.ft_parameters())
    if use_l2l and dp.l2l_unseen_classes >= num_classes:
        raise InputError(f"distill.l2l_unseen_classes: {dp.l2l_unseen_classes} leaves no pseudo-seen class of {num_classes}")
    steps = D.steps_for(len(labels), dp.batch_size, dp.epochs)
    model.to(device).train()
    optimizer = optim.adamw(model.model_parameters(), dp.lr, dp.weight_decay)
    schedule = optim.warmup_cosine(optimizer, dp.warmup_steps, steps)
    ft_optimizer = torch.optim.Adam(model.ft_parameters(), lr=dp.l2l_theta_lr) if use_l2l else None
    loss_fn = objective(dp, teacher_logits is not None)
    generator = torch.Generator().manual_seed(dp.seed)  # flips and class splits: the same for every student
    logged: dict[str, float] = {}
    order = D.batches(labels, dp.batch_size, steps, dp.seed, dp.balance)
    for step, indices in enumerate(tqdm(order, total=steps, desc=desc)):
        flips = D.random_flips(len(indices), generator, dp.flip)
        x = D.apply_flips(image_input(task.train_images[indices].to(device)), flips)
        y = labels[indices].to(device)
        z_t = teacher_logits[flips.long(), indices].to(device) if teacher_logits is not None else y
        batch = (x, y, z_t)
        unseen = None
        if use_l2l and step % dp.l2l_every == 0:
            _, unseen_classes = split_classes(num_classes, dp.l2l_unseen_classes, generator)
            unseen = torch.isin(y, unseen_classes.to(device))
            if unseen.all() or not unseen.any():  # an episode needs both parts; a plain step instead
                unseen = None
        if unseen is not None:
            seen_batch = tuple(t[~unseen] for t in batch)
            unseen_batch = tuple(t[unseen] for t in batch)
            logged = learning_to_learn_step(model, loss_fn, seen_batch, unseen_batch, dp.l2l_inner_lr, optimizer, ft_optimizer)
        else:
            loss = loss_fn(model(x), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            logged = {"seen": loss.item()}
        schedule.step()
        if live is not None:
            live.log_metric("loss/train", logged["seen"])
            if "unseen" in logged:
                live.log_metric("loss/pseudo_unseen", logged["unseen"])
            live.next_step()
    model.eval()
    return logged


def evaluate_student(model: DistillationStudent, images: Tensor, batch_size: int, device: torch.device) -> dict[str, Tensor]:
    """Test scores of the class head, the distillation head and the fused prediction (spec step 7)."""
    model.eval()
    heads = D.predict(lambda b: torch.cat(model(image_input(b)), dim=1), images, batch_size, device)
    z_cls, z_dist = heads.chunk(2, dim=1)
    return {"class": z_cls, "dist": z_dist, "fused": (z_cls.softmax(-1) + z_dist.softmax(-1)) / 2}
