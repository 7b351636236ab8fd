"""Sequential fine-tuning: L_ce only. The lower bound every continual method is compared with."""
from __future__ import annotations

from pipeline.continual.base import Method
from pipeline.continual.registry import register_method
from pipeline.losses import clip_ce


@register_method
class Finetune(Method):
    name = "finetune"

    def terms(self, batch):
        v, u = self.student_forward([batch.images], [[self.ctx.task.prompts()]])
        loss = self.ctx.params.loss
        return {"ce": clip_ce(v, u, batch.labels, self.ctx.student.logit_scale, loss.label_smoothing)}
