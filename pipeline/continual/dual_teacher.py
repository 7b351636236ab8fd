"""Dual-teacher prototype distillation (spec/dual_teacher.md; MulKI, arXiv 2411.06764).

Teachers E0 and E_{m-1} (frozen, features cached per task); class prototypes from E0 updated by a sliding
average of the student's batch features; L = ce_weight L_ce + con_weight L_con + dis_weight L_dis."""
from __future__ import annotations

import torch

from pipeline.continual.base import Method
from pipeline.continual.prototypes import update_prototypes
from pipeline.continual.registry import register_method
from pipeline.losses import clip_ce, dual_teacher_distillation, prototype_contrastive


@register_method
class DualTeacher(Method):
    name = "dual_teacher"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.prototypes = ctx.prototypes.clone()  # a buffer: never a parameter, never given gradient
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "con": loss.con_weight, "dis": loss.dis_weight}

    def terms(self, images, labels, indices):
        loss, ctx = self.ctx.params.loss, self.ctx
        v, u = ctx.student_features(images)
        self._batch = (v.detach(), labels)
        e0, prev = ctx.e0_features, ctx.prev_features
        student_rows = torch.cat([v, u])  # H = [V; U]
        e0_rows = torch.cat([e0.image[indices], e0.text])
        prev_rows = None if prev is None else torch.cat([prev.image[indices], prev.text])
        return {
            "ce": clip_ce(v, u, labels, ctx.student.logit_scale, loss.label_smoothing),
            "con": prototype_contrastive(v, labels, u, self.prototypes, loss.tau),
            "dis": dual_teacher_distillation(
                student_rows, self.prototypes, e0_rows, prev_rows, loss.teacher_weighting, loss.adaptive_k, loss.adaptive_b
            ),
        }

    def after_step(self):
        v, labels = self._batch
        self.prototypes = update_prototypes(self.prototypes, v, labels, self.ctx.params.loss.gamma)

    def state(self):
        return {"prototypes": self.prototypes}
