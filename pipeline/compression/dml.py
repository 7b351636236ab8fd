"""Method `dml`: Deep Mutual Learning (Zhang, Xiang, Hospedales, Lu, CVPR 2018), the online baseline beside MCL:
each network of the cohort learns the labels and, at temperature T, the others' predictions (detached):
sum_a [ CE_a + 1 / (M - 1) sum_{b != a} T^2 KL(p_b || p_a) ]."""
from __future__ import annotations

from pipeline.compression.base import Batch, DistillMethod
from pipeline.compression.registry import register_method
from pipeline.losses.mutual import cohort_ce, mutual_learning


@register_method
class DeepMutualLearning(DistillMethod):
    name = "dml"
    runs_distributed = True  # its one forward (the whole cohort) goes through `self.net`

    def weights(self) -> dict[str, float]:
        return {"ce": 1.0, "dml": 1.0}

    def terms(self, batch: Batch):
        logits = self.net(batch.images)  # (M, B, K)
        return {"ce": cohort_ce(logits, batch.labels), "dml": mutual_learning(logits, self.ctx.params.dml.temperature)}
