"""Learning without Memorizing (Dhar et al., CVPR 2019; shared/spec/attention_distillation.md) for CLIP:

    L = ce_weight L_C + lwm_beta L_D + lwm_gamma L_AD.

Teacher E_{m-1} (frozen), student initialised from it. L_D distils the base-class logits (as in LwF, see
base_head.py) in the form `loss.lwm_form`; L_AD compares the Grad-CAM maps of the teacher's top base class b
on the image tower's last feature map (gradcam.py). The teacher's b and maps depend only on the training
image (no augmentation), so they are computed once per task; the student's map is rebuilt every step with
create_graph=True, which is what makes L_AD a loss at all (computed under no-grad it would silently turn
LwM into LwF: spec, "L_AD").
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from pipeline.config import E0
from pipeline.continual.base import Method
from pipeline.continual.base_head import BaseHead, base_head
from pipeline.continual.gradcam import class_grad_cam, feature_map_and_features
from pipeline.continual.registry import register_method
from pipeline.losses import (
    attention_distillation,
    clip_ce,
    cosine_logits,
    lwm_distillation,
)
from pipeline.models import clip as clip_lib


def teacher_attention(
    teacher: clip_lib.Clip, head: BaseHead, images: torch.Tensor, batch_size: int, device: torch.device, stage: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """The frozen teacher's top base class b (N,) and its Grad-CAM map Q_hat (N, P) for every image.

    The gradient is taken with respect to a detached copy of A (no graph through the teacher's parameters,
    which stay frozen and receive no .grad); the results are constants.
    """
    tops, maps = [], []
    for start in range(0, len(images), batch_size):
        a, features = feature_map_and_features(
            teacher, images[start : start + batch_size].to(device), leaf=True, stage=stage
        )
        logits = cosine_logits(features, head.teacher_text, teacher.logit_scale)
        top = logits.argmax(dim=1)
        q = class_grad_cam(a, logits.gather(1, top[:, None]).squeeze(1), create_graph=False)
        tops.append(top)
        maps.append(q.detach())
    return torch.cat(tops), torch.cat(maps)


@register_method
class LwM(Method):
    name = "lwm"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.head: BaseHead | None = None
        if ctx.prev_name != E0 or ctx.params.loss.kd_first_task == "current":
            teacher = ctx.load_teacher(ctx.prev_name)  # E0 on the first task
            self.head = base_head(ctx, teacher)
            self.top_class, self.teacher_maps = teacher_attention(
                teacher, self.head, ctx.task.train_images, ctx.params.eval.batch_size, ctx.device, ctx.params.loss.lwm_stage
            )
            if self.teacher_maps.shape[1] == 1:
                warnings.warn(
                    "lwm: the Grad-CAM feature map (loss.lwm_stage) has a single cell at this image size, so every "
                    "Grad-CAM map is the same constant and L_AD gives no gradient (LwM reduces to LwF)",
                    stacklevel=2,
                )

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "kd": loss.lwm_beta, "ad": loss.lwm_gamma}

    def terms(self, images, labels, indices):
        ctx, loss = self.ctx, self.ctx.params.loss
        scale = ctx.student.logit_scale
        a, features = feature_map_and_features(ctx.student, images, stage=loss.lwm_stage)  # one forward: L_C, L_D and L_AD
        v = F.normalize(features, dim=-1)
        u = clip_lib.class_text_features(ctx.student, ctx.task.prompts())
        terms = {"ce": clip_ce(v, u, labels, scale, loss.label_smoothing)}
        if self.head is None:  # first task with kd_first_task = none: no base classes, no teacher class b
            terms["kd"] = terms["ad"] = v.new_zeros(())
            return terms
        student_text = u if self.head.is_current else self.head.student_text(ctx.student)
        y_hat = cosine_logits(v, student_text, scale)  # (B, C_b) student base-class logits
        y = cosine_logits(self.head.teacher_image[indices], self.head.teacher_text, scale)
        terms["kd"] = lwm_distillation(y_hat, y, loss.lwm_form, loss.kd_temperature)
        b = self.top_class[indices]
        q_student = class_grad_cam(a, y_hat.gather(1, b[:, None]).squeeze(1), create_graph=True)
        terms["ad"] = attention_distillation(q_student, self.teacher_maps[indices])
        return terms
