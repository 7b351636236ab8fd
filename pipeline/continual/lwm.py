"""Learning without Memorizing (Dhar et al., CVPR 2019; docs/methods/lwm.md) for CLIP:

    L = ce_weight L_C + lwm_beta L_D + lwm_gamma L_AD.

Teacher E_{m-1} (frozen), student initialised from it. L_D distils the base-class logits (as in LwF, see
base_head.py) in the form `loss.lwm_form`; L_AD compares the Grad-CAM maps of the teacher's top base class b
on the image tower's last feature map (gradcam.py). The teacher's logits y, b and maps depend only on the
training image (no augmentation), so they are computed once per task; the student's map is rebuilt every step
with create_graph=True, which is what makes L_AD a loss at all (computed under no-grad it would silently turn
LwM into LwF: spec, "L_AD").

Teacher and student compute their logits and maps with the same functions (`feature_map_and_features`,
`cosine_logits`, `top_class_map`: the teacher through `base_forward`, the student in its one forward of the
step), so at student == teacher (the first step of task 1) their logits and maps agree bit for bit. This matters for L_AD: an L1 distance has
a full-sized gradient (sign(Q_hat_{t-1} - Q_hat_t)) for any difference however small, so a rounding-level
mismatch between the two sides (an extra F.normalize on one of them gave ~1e-7) sent a gradient of norm ~746
(ResNet) / ~45 (ViT) into a student that was already at its optimum.
"""
from __future__ import annotations

import warnings

import torch

from pipeline.continual.base import Method
from pipeline.continual.base_head import BaseHead, base_head
from pipeline.continual.gradcam import class_grad_cam, feature_map_and_features
from pipeline.continual.registry import register_method
from pipeline.data import loader
from pipeline.losses import (
    attention_distillation,
    clip_ce,
    cosine_logits,
    lwm_distillation,
)
from pipeline.models import clip as clip_lib


def base_forward(
    clip: clip_lib.Clip, images: torch.Tensor, base_text: torch.Tensor, stage: int, leaf: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One image-tower forward: Grad-CAM's map A, the unnormalised image features and the base-class logits
    y = s cos(v, u_b) (B, C_b). The single place where teacher and student compute them (see the module doc)."""
    a, features = feature_map_and_features(clip, images, leaf=leaf, stage=stage)
    return a, features, cosine_logits(features, base_text, clip.logit_scale)


def top_class_map(a: torch.Tensor, logits: torch.Tensor, b: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Q_hat (B, P) of each sample's class b (B,): Grad-CAM of the logit y_b on A."""
    return class_grad_cam(a, logits.gather(1, b[:, None]).squeeze(1), create_graph=create_graph)


def teacher_attention(
    teacher: clip_lib.Clip, head: BaseHead, images: torch.Tensor, batch_size: int, device: torch.device, stage: int = 4
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frozen teacher's base-class logits y (N, C_b), top base class b (N,) and Grad-CAM map Q_hat (N, P)
    for every image.

    The gradient is taken with respect to a detached copy of A (no graph through the teacher's parameters,
    which stay frozen and receive no .grad); the results are constants.
    """
    logits, tops, maps = [], [], []
    for batch in loader.sequential(images, batch_size):
        batch = batch.to(device)
        a, _, y = base_forward(teacher, batch, head.teacher_text, stage, leaf=True)
        top = y.argmax(dim=1)
        logits.append(y.detach())
        tops.append(top)
        maps.append(top_class_map(a, y, top, create_graph=False).detach())
    return torch.cat(logits), torch.cat(tops), torch.cat(maps)


@register_method
class LwM(Method):
    name = "lwm"

    @classmethod
    def reads(cls, loss, first):
        return frozenset() if first and loss.kd_first_task == "none" else frozenset({"prev_teacher"})

    def __init__(self, ctx):
        super().__init__(ctx)
        self.head: BaseHead | None = None
        if not ctx.first or ctx.params.loss.kd_first_task == "current":
            self.teacher = ctx.prev_teacher  # E0 on the first task
            self.head = base_head(ctx, self.teacher, image=None)  # y comes from teacher_attention
            # Without augmentation the teacher's y, b and Grad-CAM maps of every training image are computed once;
            # with it, on each batch (`teacher_outputs`).
            if ctx.params.train.augment:
                self.teacher_logits = self.top_class = self.teacher_maps = None
                maps = self.teacher_outputs(ctx.task.train_images[:1])[2]
            else:
                self.teacher_logits, self.top_class, self.teacher_maps = self.teacher_outputs(ctx.task.train_images)
                maps = self.teacher_maps
            if maps.shape[1] == 1:
                warnings.warn(
                    "lwm: the Grad-CAM feature map (loss.lwm_stage) has a single cell at this image size, so every "
                    "Grad-CAM map is the same constant and L_AD gives no gradient (LwM reduces to LwF)",
                    stacklevel=2,
                )

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "kd": loss.lwm_beta, "ad": loss.lwm_gamma}

    def terms(self, batch):
        images, labels, indices = batch.images, batch.labels, batch.indices
        ctx, loss = self.ctx, self.ctx.params.loss
        if self.head is None:  # first task with kd_first_task = none: no base classes, no teacher class b
            v, u = self.student_forward([images], [[ctx.task.prompts()]])
            zero = v.new_zeros(())
            return {"ce": clip_ce(v, u, labels, ctx.student.logit_scale, loss.label_smoothing), "kd": zero, "ad": zero}
        # One forward for L_C, L_D and L_AD (one call of the student's module: DDP); y_hat (B, C_b) as the
        # teacher's y (base_forward: the same two functions, feature_map_and_features and cosine_logits).
        base = self.head.prompt_groups()
        u, *base_u, a, features = self.student_forward(prompts=[[ctx.task.prompts()], *base], cam=(images, loss.lwm_stage))
        student_text = u if self.head.is_current else torch.cat(base_u)  # the base tasks' texts, from the one forward
        y_hat = cosine_logits(features, student_text, ctx.student.logit_scale)
        if self.teacher_logits is None:  # augmented images: the teacher on this batch
            y, b, q = self.teacher_outputs(images)
        else:
            y, b, q = self.teacher_logits[indices], self.top_class[indices], self.teacher_maps[indices]
        return {
            "ce": clip_ce(features, u, labels, ctx.student.logit_scale, loss.label_smoothing),  # normalises inside
            "kd": lwm_distillation(y_hat, y, loss.lwm_form, loss.kd_temperature),
            "ad": attention_distillation(top_class_map(a, y_hat, b, create_graph=True), q),
        }

    def teacher_outputs(self, images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The teacher's base-class logits y, top class b and Grad-CAM map of `images` (fp32 whatever the
        precision: `.float()` is a no-op in fp32)."""
        ctx = self.ctx
        with ctx.autocast():
            y, b, q = teacher_attention(self.teacher, self.head, images, ctx.params.eval.batch_size, ctx.device,
                                        ctx.params.loss.lwm_stage)
        return y.float(), b, q.float()
