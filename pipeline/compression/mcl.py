"""Method `mcl` (docs/methods/mcl.md; Yang et al., "Mutual Contrastive Learning for Visual Representation
Learning", AAAI 2022): a cohort trained together, each network's embedding contrasted inside itself (VCL) and
against the others' (ICL), and each network's contrastive distributions aligned to the others' (soft VCL, soft
ICL): sum_a CE_a + alpha VCL + beta ICL + gamma soft VCL + lam soft ICL. No teacher; the projection heads are
the cohort's (pipeline/models/cohort.py), used in training only."""
from __future__ import annotations

from pipeline.compression.base import Batch, DistillMethod
from pipeline.compression.registry import register_method
from pipeline.losses.contrastive import mcl_terms
from pipeline.losses.mutual import cohort_ce


@register_method
class MutualContrastive(DistillMethod):
    name = "mcl"

    def weights(self) -> dict[str, float]:
        p = self.ctx.params.mcl
        return {"ce": 1.0, "vcl": p.alpha, "icl": p.beta, "soft_vcl": p.gamma, "soft_icl": p.lam}

    def terms(self, batch: Batch):
        p = self.ctx.params.mcl
        logits, embeddings = self.ctx.student.embed(batch.images)
        return {"ce": cohort_ce(logits, batch.labels),
                **mcl_terms(embeddings, batch.labels, p.tau, p.temperature, p.icl_diagonal)}
