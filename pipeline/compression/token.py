"""Method `token` (docs/methods/token.md): the DeiT-style student learns the labels through its
class token and the teacher through its distillation token (soft or hard distillation, spec step 6); the FT
layers' theta is learned by learning-to-learn every `l2l_every` steps (l2l.py, the patent's "first
training"), the model weights by AdamW on every step. Without a teacher, both heads learn the labels
(`student_ce`): the same student, batches, flips and class splits, everything but the teacher."""
from __future__ import annotations

import torch

from pipeline import distributed
from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.compression.l2l import learning_to_learn_step, split_classes
from pipeline.compression.registry import register_method
from pipeline.errors import InputError
from pipeline.losses import hard_distillation, soft_distillation, student_ce


@register_method
class TokenDistillation(DistillMethod):
    name = "token"
    runs_distributed = True  # through `self.net` (a learning-to-learn episode excepted: one process only)

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.tp = ctx.params.token
        k = len(ctx.task.classes)
        self.use_l2l = self.tp.l2l and bool(ctx.student.ft_parameters())
        if self.use_l2l and self.tp.l2l_unseen_classes >= k:
            raise InputError(f"distill.token.l2l_unseen_classes: {self.tp.l2l_unseen_classes} leaves no pseudo-seen class of {k}")
        self.ft_optimizer = None

    def weights(self) -> dict[str, float]:
        return {self.loss_name: 1.0}

    @property
    def loss_name(self) -> str:
        if self.ctx.teacher is None:
            return "student_ce"
        return f"{self.tp.mode}_distillation"

    def parameters(self):
        return list(self.ctx.student.model_parameters())  # the thetas are the FT optimiser's (learning-to-learn)

    def start(self, optimizer, steps):
        if self.use_l2l:
            self.ft_optimizer = torch.optim.Adam(self.ctx.student.ft_parameters(), lr=self.tp.l2l_theta_lr)

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], batch: tuple) -> torch.Tensor:
        """(model output (z_s, z_d), (x, y, z_t)) -> the loss; z_t is unused without a teacher."""
        z_s, z_d = out
        if self.ctx.teacher is None:
            return student_ce(z_s, z_d, batch[1])
        if self.tp.mode == "hard":
            return hard_distillation(z_s, z_d, batch[2], batch[1])
        return soft_distillation(z_s, z_d, batch[2], batch[1], self.tp.lam, self.tp.tau)

    def terms(self, batch: Batch):
        z_t = self.ctx.teacher_logits_of(batch) if self.ctx.teacher is not None else None
        return {self.loss_name: self.loss(self.net(batch.images), (batch.images, batch.labels, z_t))}

    def step(self, step: int, batch: Batch, optimizer) -> dict[str, float]:
        unseen = None
        if self.use_l2l and step % self.tp.l2l_every == 0:
            _, unseen_classes = split_classes(len(self.ctx.task.classes), self.tp.l2l_unseen_classes, self.ctx.generator)
            unseen = torch.isin(batch.labels, unseen_classes.to(self.ctx.device))
            if unseen.all() or not unseen.any():  # an episode needs both parts; a plain step instead
                unseen = None
        if unseen is None:
            return super().step(step, batch, optimizer)
        if distributed.world_size() > 1:  # the episode's two updates reach the student outside DDP's forward
            raise NotImplementedError("learning-to-learn episodes run in one process only")
        z_t = self.ctx.teacher_logits_of(batch) if self.ctx.teacher is not None else batch.labels
        parts = (batch.images, batch.labels, z_t)
        seen_batch = tuple(t[~unseen] for t in parts)
        unseen_batch = tuple(t[unseen] for t in parts)
        losses = learning_to_learn_step(self.ctx.student, self.loss, seen_batch, unseen_batch, self.tp.l2l_inner_lr,
                                        optimizer, self.ft_optimizer, autocast=self.ctx.autocast)
        return {self.loss_name: losses["seen"], "pseudo_unseen": losses["unseen"], "total": losses["seen"]}
