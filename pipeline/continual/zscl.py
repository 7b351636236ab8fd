"""ZSCL (Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language
Models", ICCV 2023): L = ce_weight L_ce + zscl_weight L_zscl + zscl_l2 L_l2, and a weight ensemble; by default
as the authors' published runs do it (mtil/scripts/ZSCL.sh). `loss.zscl_reference: corpus_oracle`,
`zscl_ensemble_every: 0` and `zscl_l2: 0` give the form of the tables before.

- L_zscl ("Distillation in Feature Space"): the frozen E0 teaches the student its image->text and text->image
  distributions on reference data (`zscl_distillation`), which keeps the student's zero-shot behaviour on data
  that is neither the current nor an earlier task. Where that data comes from (`loss.zscl_reference`):
  - `reference` (default; ZSCL as published, `mtil/scripts/ZSCL.sh`: `--ref-dataset ImageNet --ref-sentences
    conceptual_captions`): each step `loss.zscl_ref_batch` images of the generated reference domain
    (data/reference, ImageNet's stand-in: no task's generator, no task's class) scored against the whole
    unpaired caption pool (Conceptual Captions' stand-in), as ZSCL's code scores each ImageNet batch against
    every sentence it holds: logits (B, N_pool).
  - `corpus_oracle`: `zscl_ref_batch` image-caption pairs of E0's own pretraining corpus, logits (B, B). The
    corpus covers every task's domain and names the tasks' classes: an oracle that replays the tasks' domains.
  With `loss.zscl_text: e0` (default) both logit matrices score the images against E0's frozen caption
  features, as ZSCL's code does (mtil/src/models/finetune.py: `ref_embeddings` come from the reference model
  under no_grad and serve `logits_current` and `logits_ref` alike), so L_zscl distils into the image tower
  only; `student` uses the student's own caption features, which lets L_zscl train the text tower too (with
  `reference`, a text-tower forward over the whole pool each step).
- L_l2: the published scripts' `--l2 1`, the squared distance in parameter space from the weights the task
  started from, summed over every parameter (`weight_l2`; mtil/src/models/helpers.py `l2_loss`).
- Weight ensemble ("Weight Ensemble in Parameter Space", `loss.zscl_ensemble_every` = N > 0; on by default at
  ZSCL's cadence, `--we --avg_freq 100` of 1000 iterations, scaled to 10 of our 100 steps): the running mean
  theta_hat of the student's weights replaces the student at the end of the task. Snapshots as in ZSCL's
  code (`merge_we`, `iteration % avg_freq == 0`): the weights the task starts from (E_{m-1}) count as the
  first, then the weights after steps 1, N + 1, 2N + 1, ..., each folded in by
  theta_hat <- (k theta_hat + theta) / (k + 1) with k the snapshots so far. So theta_hat always holds at least
  one trained snapshot, and N = 1 averages the initial weights and the weights after every step.

Several processes (`runtime.nproc`): every rank draws the same reference batch (the same seeded stream) and
computes L_zscl on all of it, so its gradient is the same on every rank and their mean is one process's; L_ce
is a per-sample mean on the rank's share of the task's batch (pipeline/distributed.py).
"""
from __future__ import annotations

import torch

from pipeline import runtime
from pipeline.continual.base import Method
from pipeline.continual.registry import register_method
from pipeline.continual.weights import WeightEnsemble
from pipeline.losses import clip_ce, cosine_logits, weight_l2, zscl_distillation
from pipeline.models import clip as clip_lib
from pipeline.runtime import stable_seed


@register_method
class ZSCL(Method):
    name = "zscl"  # in registry.CORPUS_METHODS: reads E0's corpus with loss.zscl_reference: corpus_oracle

    @classmethod
    def reads(cls, loss, first):
        return frozenset({"e0_teacher", "reference"})

    def __init__(self, ctx):
        super().__init__(ctx)
        self.e0 = ctx.e0_teacher  # the reference model stays E0 on every task, as in ZSCL
        self.oracle = ctx.params.loss.zscl_reference == "corpus_oracle"
        if self.oracle:  # `reference` is E0's caption corpus
            self.corpus = ctx.reference
            self.images, self.pool = self.corpus.images, None
        else:  # the reference set: images and an unpaired caption pool
            ref = ctx.reference
            self.images, self.pool = ref.images, ref.captions
            # E0 is frozen: its features of the fixed pool are the same every step (ZSCL's code recomputes them).
            with torch.no_grad(), ctx.autocast():
                self.pool_e0_text = clip_lib.encode_texts(self.e0, self.pool).float()
        # Own stream, seeded by the seed and the task: reference batches are the same on every run and do not
        # shift the batches of the task (which come from the trainer's own seeded order).
        self.generator = torch.Generator().manual_seed(stable_seed(ctx.params.train.seed, ctx.name, "zscl"))
        self.ensemble = WeightEnsemble(ctx.student.model, ctx.params.loss.zscl_ensemble_every)
        # L_l2's reference: the weights the task starts from (E_{m-1}), as ZSCL's `l2_model` (a copy at the start)
        self.start_weights = {n: p.detach().clone() for n, p in ctx.student.model.named_parameters()} if ctx.params.loss.zscl_l2 else None

    def weights(self):
        loss = self.ctx.params.loss
        weights = {"ce": loss.ce_weight, "zscl": loss.zscl_weight}
        return weights | ({"l2": loss.zscl_l2} if loss.zscl_l2 else {})

    def reference_batch(self) -> tuple[torch.Tensor, list[str]]:
        """`zscl_ref_batch` distinct reference images (all of them if there are fewer) and the captions they are
        scored against: the whole pool (reference), or the images' own captions (corpus_oracle)."""
        n = min(self.ctx.params.loss.zscl_ref_batch, len(self.images))
        idx = torch.randperm(len(self.images), generator=self.generator)[:n]
        images = runtime.to_device(self.images[idx], self.ctx.device)
        return images, (self.pool if not self.oracle else [self.corpus.captions[i] for i in idx.tolist()])

    def terms(self, batch):
        images, labels = batch.images, batch.labels
        ctx, loss = self.ctx, self.ctx.params.loss
        ref_images, captions = self.reference_batch()
        # One forward of the student (DDP): the task's batch and the reference batch, the class texts and, with
        # zscl_text student, its own caption features.
        own_text = [] if loss.zscl_text == "e0" else [captions]
        v, ref_v, u, *student_text = self.student_forward([images, ref_images], [[ctx.task.prompts()]], own_text)
        # Image->text logits s * V_ref U_ref^T (B, B); E0's and the student's logit scale are equal (frozen
        # after pretraining). E0's caption features are computed once and, with zscl_text e0, serve both sides.
        with torch.no_grad():
            e0_text = clip_lib.encode_texts(self.e0, captions) if self.oracle else self.pool_e0_text
            teacher = cosine_logits(clip_lib.encode_images(self.e0, ref_images), e0_text, self.e0.logit_scale)
        text = e0_text if loss.zscl_text == "e0" else student_text[0]
        student = cosine_logits(ref_v, text, ctx.student.logit_scale)
        out = {
            "ce": clip_ce(v, u, labels, ctx.student.logit_scale, loss.label_smoothing),
            "zscl": zscl_distillation(student, teacher, loss.kd_temperature),
        }
        if self.start_weights is not None:
            out["l2"] = sum(weight_l2(p, self.start_weights[n]) for n, p in ctx.student.model.named_parameters())
        return out

    def after_step(self):
        self.ensemble.after_step(self.ctx.student.model)

    def finish(self):
        self.ensemble.finish(self.ctx.student.model)
