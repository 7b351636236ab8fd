"""Training on the labels alone: the CNN teacher (stage `teacher`) and a CNN student without its teacher (stage
`student_alone`) and every network of a cohort on its own (stage `cohort`, `cohort.method: alone`: the sum of
independent cross entropies; AdamW is per weight, so one optimiser over the cohort trains each network as its
own would). Class imbalance through inverse-frequency loss weights when the recipe asks for them
(`teacher.balance: weights`; `sampler` is handled by the batches)."""
from __future__ import annotations

import torch.nn.functional as F

from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.compression.registry import register_method
from pipeline.names import SUPERVISED
from pipeline.losses.mutual import cohort_ce
from pipeline.models.cohort import Cohort


@register_method
class Supervised(DistillMethod):
    name = SUPERVISED
    runs_distributed = True  # its one forward goes through `self.net`

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        labels, k = ctx.task.train_labels, len(ctx.task.classes)
        self.class_weights = D.class_weights(labels, k).to(ctx.device) if ctx.params.balance == "weights" else None

    def terms(self, batch: Batch):
        logits = self.net(batch.images)
        if isinstance(self.ctx.student, Cohort):  # (M, B, K)
            return {"ce": cohort_ce(logits, batch.labels)}
        return {"ce": F.cross_entropy(logits, batch.labels, weight=self.class_weights)}
