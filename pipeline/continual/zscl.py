"""ZSCL (Zheng et al., "Preventing Zero-Shot Transfer Degradation in Continual Learning of Vision-Language
Models", ICCV 2023): L = ce_weight L_ce + zscl_weight L_zscl, plus an optional weight ensemble.

- L_zscl ("Distillation in Feature Space"): each step a reference batch of `loss.zscl_ref_batch` image-caption
  pairs from the pretraining corpus; the frozen E0 teaches the student its image->text and text->image
  distributions over the batch (`zscl_distillation`). This keeps the student's zero-shot behaviour on
  data that is neither the current nor an earlier task. With `loss.zscl_text: e0` (default) both logit matrices
  score the images against E0's frozen caption features, as ZSCL's code does (mtil/src/models/finetune.py:
  `ref_embeddings` come from the reference model under no_grad and serve `logits_current` and `logits_ref`
  alike), so L_zscl distils into the image tower only; `student` uses the student's own caption features,
  which lets L_zscl train the text tower too.
- Weight ensemble ("Weight Ensemble in Parameter Space", `loss.zscl_ensemble_every` = N > 0): the running mean
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
from pipeline.config import E0
from pipeline.continual.base import Method
from pipeline.continual.registry import register_method
from pipeline.continual.weights import assign, floating_state, running_average
from pipeline.losses import clip_ce, cosine_logits, zscl_distillation
from pipeline.models import clip as clip_lib
from pipeline.runtime import stable_seed


@register_method
class ZSCL(Method):
    name = "zscl"  # in registry.CORPUS_METHODS: reference batches from E0's corpus

    def __init__(self, ctx):
        super().__init__(ctx)
        self.e0 = ctx.load_teacher(E0)  # the reference model stays E0 on every task, as in ZSCL
        self.corpus = ctx.load_corpus(needed_by=f"train.method: {self.name}")
        # Own stream, seeded by the seed and the task: reference batches are the same on every run and do not
        # shift the batches of the task (which come from the trainer's own seeded order).
        self.generator = torch.Generator().manual_seed(stable_seed(ctx.params.train.seed, ctx.name, "zscl"))
        self.steps_taken = 0
        self.every = ctx.params.loss.zscl_ensemble_every
        self.average = floating_state(ctx.student.model) if self.every else None
        self.snapshots = 1  # the initial weights count as the first snapshot

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "zscl": loss.zscl_weight}

    def reference_batch(self) -> tuple[torch.Tensor, list[str]]:
        """`zscl_ref_batch` distinct corpus pairs (all of them if the corpus is smaller)."""
        n = min(self.ctx.params.loss.zscl_ref_batch, len(self.corpus.captions))
        idx = torch.randperm(len(self.corpus.captions), generator=self.generator)[:n]
        return runtime.to_device(self.corpus.images[idx], self.ctx.device), [self.corpus.captions[i] for i in idx.tolist()]

    def terms(self, batch):
        images, labels = batch.images, batch.labels
        ctx, loss = self.ctx, self.ctx.params.loss
        v, u = ctx.student_features(images)
        ref_images, captions = self.reference_batch()
        # Image->text logits s * V_ref U_ref^T (B, B); E0's and the student's logit scale are equal (frozen
        # after pretraining). E0's caption features are computed once and, with zscl_text e0, serve both sides.
        with torch.no_grad():
            e0_text = clip_lib.encode_texts(self.e0, captions)
            teacher = cosine_logits(clip_lib.encode_images(self.e0, ref_images), e0_text, self.e0.logit_scale)
        text = e0_text if loss.zscl_text == "e0" else clip_lib.encode_texts(ctx.student, captions)
        student = cosine_logits(clip_lib.encode_images(ctx.student, ref_images), text, ctx.student.logit_scale)
        return {
            "ce": clip_ce(v, u, labels, ctx.student.logit_scale, loss.label_smoothing),
            "zscl": zscl_distillation(student, teacher, loss.kd_temperature),
        }

    def after_step(self):
        # 0-based index of the step just taken, as ZSCL's `iteration`: the first step is always averaged in.
        if self.every and self.steps_taken % self.every == 0:
            self.average = running_average(self.average, floating_state(self.ctx.student.model), self.snapshots)
            self.snapshots += 1
        self.steps_taken += 1

    def finish(self):
        if self.average is not None:
            assign(self.ctx.student.model, self.average)
