"""Learning without Forgetting (Li & Hoiem, TPAMI 2017) for CLIP: L = ce_weight L_ce + kd_weight L_kd.

L_kd distils the frozen E_{m-1}'s predictions on the current task's images over the base classes (the class
texts of all earlier tasks) into the student, softmax KD at `loss.kd_temperature`. No data of earlier tasks
is stored: only their class names, which the classifier of a CLIP model is made of.
"""
from __future__ import annotations

import torch

from pipeline.continual.base import Method
from pipeline.continual.base_head import BaseHead
from pipeline.continual.registry import register_method
from pipeline.losses import clip_ce, cosine_logits, knowledge_distillation


@register_method
class LwF(Method):
    name = "lwf"

    @classmethod
    def reads(cls, loss, first):
        return frozenset({"base_head"})

    def __init__(self, ctx):
        super().__init__(ctx)
        self.head: BaseHead | None = ctx.base_head  # teacher features computed once per task, by the stage

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "kd": loss.kd_weight}

    def terms(self, batch):
        images, labels, indices = batch.images, batch.labels, batch.indices
        ctx, loss = self.ctx, self.ctx.params.loss
        base = [] if self.head is None else self.head.prompt_groups()
        v, u, *base_u = self.student_forward([images], [[ctx.task.prompts()], *base])  # one forward: DDP
        scale = ctx.student.logit_scale
        terms = {"ce": clip_ce(v, u, labels, scale, loss.label_smoothing)}
        if self.head is None:  # first task with kd_first_task = none: nothing to distil from
            terms["kd"] = v.new_zeros(())
            return terms
        student_text = u if self.head.is_current else torch.cat(base_u)  # the base tasks' texts, from the one forward
        student_logits = cosine_logits(v, student_text, scale)
        # The logit scale is frozen since pretraining, so E_{m-1}'s scale is the student's.
        teacher_logits = cosine_logits(self.head.teacher_image(images, indices), self.head.teacher_text, scale)
        terms["kd"] = knowledge_distillation(student_logits, teacher_logits, loss.kd_temperature)
        return terms
