"""Method `fitnet`: feature distillation through a learnable adapter (FitNets, Romero et al., ICLR 2015, trained
jointly with the task loss as in RepDistiller, Tian et al. 2020): at each site pair a 1x1 convolution and a
BatchNorm (the "connector" of Heo et al., ICCV 2019) map the student's n channels to the teacher's m, and the
distance loss (`distill.feature.loss`) pulls them to the teacher's map. The adapters are trained with the
student and dropped after: they are the added parameters channel matching does without."""
from __future__ import annotations

from torch import nn

from pipeline.compression.base import DistillContext
from pipeline.compression.features import FeatureDistillation
from pipeline.compression.registry import register_method


@register_method
class FitNet(FeatureDistillation):
    name = "fitnet"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.added = nn.ModuleList(nn.Sequential(nn.Conv2d(n, m, 1, bias=False), nn.BatchNorm2d(m))
                                   for n, m in self.sites.channels)

    def pair_loss(self, k, student, teacher):
        return self.sites.loss(self.added[k](student), teacher)
