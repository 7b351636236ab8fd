"""Training on the labels alone: the CNN teacher (stage `teacher`) and a CNN student without its teacher (stage
`student_alone`). Class imbalance through inverse-frequency loss weights when the recipe asks for them
(`teacher.balance: weights`; `sampler` is handled by the batches)."""
from __future__ import annotations

import torch.nn.functional as F

from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.compression.registry import SUPERVISED, register_method


@register_method
class Supervised(DistillMethod):
    name = SUPERVISED

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        labels, k = ctx.task.train_labels, len(ctx.task.classes)
        self.class_weights = D.class_weights(labels, k).to(ctx.device) if ctx.params.balance == "weights" else None

    def terms(self, batch: Batch):
        return {"ce": F.cross_entropy(self.ctx.student(batch.images), batch.labels, weight=self.class_weights)}
