"""The student `distill.student` names: the distillation-token student (`token`) or a CNN by name; its test
scores, and the prediction its accuracy is reported on (the token student's fused heads, spec step 7)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from pipeline import runtime
from pipeline.compression import data as D
from pipeline.params.compression import TOKEN, DistillParams
from pipeline.models import classifier
from pipeline.models.classifier import image_input
from pipeline.models.student import DistillationStudent, StudentConfig


def build(dp: DistillParams, image_size: int, num_classes: int) -> nn.Module:
    """A fresh student (the caller seeds torch first: every training of a seed starts from the same weights)."""
    if dp.student == TOKEN:
        return classifier.build_student(StudentConfig(image_size=image_size, num_classes=num_classes,
                                                      **dp.token.student.model_dump()))
    model = classifier.build_cnn(dp.student, num_classes, dp.stem_stride)
    classifier.check_image_size(model, dp.student, image_size, key="distill.student")
    return model


def meta(model: nn.Module, dp: DistillParams, classes: list[str], **extra) -> dict:
    """What `classifier.load` rebuilds the student from, with the params that made it."""
    if isinstance(model, DistillationStudent):
        return classifier.student_meta(model, classes, **extra)
    return classifier.cnn_meta(dp.student, dp.stem_stride, classes, **extra)


def test_scores(model: nn.Module, images: Tensor, batch_size: int, device: torch.device,
                precision: str = "fp32") -> dict[str, Tensor]:
    """Test scores by head: the token student's class and distillation heads and their fusion (`fused`, the
    mean of the two softmaxes), a CNN's `logits`. `prediction(scores)` is the one accuracy is reported on.
    The forward passes run under `precision`'s autocast (none at all in fp32); scores come back in fp32."""
    model.eval()
    with runtime.autocast(device, precision):
        if isinstance(model, DistillationStudent):
            heads = D.predict(lambda b: torch.cat(model(image_input(b)), dim=1), images, batch_size, device)
            z_cls, z_dist = heads.chunk(2, dim=1)
            return {"class": z_cls, "dist": z_dist, "fused": (z_cls.softmax(-1) + z_dist.softmax(-1)) / 2}
        return {"logits": D.predict(lambda b: model(image_input(b)), images, batch_size, device)}


def prediction(scores: dict[str, Tensor]) -> Tensor:
    return scores["fused"] if "fused" in scores else scores["logits"]
