"""Method `kd`: logit distillation (Hinton, Vinyals, Dean, "Distilling the knowledge in a neural network",
2015): (1 - weight) CE(z_s, y) + weight tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau)). The teacher's
logits of every training image (both flips) are computed once (DistillContext.teacher_logits)."""
from __future__ import annotations

import torch.nn.functional as F

from pipeline.compression.base import Batch, DistillMethod
from pipeline.compression.registry import register_method
from pipeline.losses import knowledge_distillation


@register_method
class LogitKD(DistillMethod):
    name = "kd"
    runs_distributed = True  # its one forward goes through `self.net`

    def weights(self) -> dict[str, float]:
        w = self.ctx.params.kd.weight
        return {"ce": 1.0 - w, "kd": w}

    def terms(self, batch: Batch):
        z_s = self.net(batch.images)
        return {"ce": F.cross_entropy(z_s, batch.labels),
                "kd": knowledge_distillation(z_s, self.ctx.teacher_logits_of(batch), self.ctx.params.kd.tau)}
