"""Method `fitnet`: feature distillation through a learnable adapter (FitNets, Romero et al., ICLR 2015, trained
jointly with the task loss as in RepDistiller, Tian et al. 2020): at each site pair a 1x1 convolution and a
BatchNorm (the "connector" of Heo et al., ICCV 2019) map the student's n channels to the teacher's m, and the
distance loss (`distill.feature.loss`) pulls them to the teacher's map. The adapters are trained with the
student and dropped after: they are the added parameters channel matching does without."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.compression.features import SitePairs
from pipeline.compression.registry import register_method


@register_method
class FitNet(DistillMethod):
    name = "fitnet"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.sites = SitePairs(ctx)
        self.added = nn.ModuleList(nn.Sequential(nn.Conv2d(n, m, 1, bias=False), nn.BatchNorm2d(m))
                                   for n, m in self.sites.channels)

    def weights(self) -> dict[str, float]:
        return {"ce": 1.0, "feature": self.ctx.params.feature.weight}

    def terms(self, batch: Batch):
        logits, student = self.sites.student_maps(batch.images)
        teacher = self.sites.teacher_maps_of(batch)
        # mean over site pairs: `feature.weight` means the same whatever the number of pairs
        feature = sum(self.sites.loss(adapter(s), t) for adapter, s, t in zip(self.added, student, teacher)) / len(teacher)
        return {"ce": F.cross_entropy(logits, batch.labels), "feature": feature}

    def describe(self) -> dict:
        return {"sites": self.sites.names()}
