"""The teacher of the distillation stage (`distill.teacher`): the CNN of the `teacher` stage, or a model of the
continual-learning chain used through its zero-shot head on the target task's class texts.

Training augmentation is a left-right flip only, so the teacher's logits of every training image are computed
once per view ((2, N, K)) instead of a teacher forward pass at every step."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from pipeline import paths
from pipeline.params import Params
from pipeline.data import TaskData
from pipeline.compression import data as D
from pipeline.models import classifier
from pipeline.models import clip as clip_lib
from pipeline.errors import InputError


@dataclass
class Teacher:
    name: str  # e.g. "cnn resnet18" or "continual background (zero-shot head)"
    logits: Callable[[Tensor], Tensor]  # uint8 images on the device -> (B, K) logits
    parameters: int
    module: nn.Module | None = None  # the CNN itself, frozen and in eval mode (feature methods read its sites)


def load_teacher(params: Params, task: TaskData, device: torch.device) -> Teacher:
    choice = params.distill.teacher
    if choice == "cnn":
        model, meta = classifier.load(paths.CNN)
        if meta["classes"] != task.classes:
            raise InputError(f"{paths.CNN}: trained on other classes than {paths.TARGET} (re-run the teacher stage)")
        model.to(device).requires_grad_(False)
        return Teacher(f"cnn {meta['arch']}", lambda images: model(classifier.image_input(images)),
                       sum(p.numel() for p in model.parameters()), module=model)
    clip = clip_lib.freeze(clip_lib.load(paths.model_dir(choice)))
    clip.model.to(device)
    with torch.no_grad():
        text = clip_lib.class_text_features(clip, task.prompts())
    scale = clip.logit_scale.exp()

    def zero_shot(images: Tensor) -> Tensor:
        return scale * clip_lib.encode_images(clip, images) @ text.T

    # The text tower runs once per task, not per image: the image tower is the teacher's inference cost.
    return Teacher(f"continual {choice} (zero-shot head)", zero_shot, sum(p.numel() for p in clip.model.visual.parameters()))


@torch.no_grad()
def training_logits(teacher: Teacher, task: TaskData, batch_size: int, device: torch.device) -> Tensor:
    """(2, N, K): the teacher's logits of every training image as is (0) and mirrored (1)."""
    images = task.train_images
    plain = D.predict(teacher.logits, images, batch_size, device)
    mirrored = D.predict(teacher.logits, images.flip(-1), batch_size, device)
    return torch.stack([plain, mirrored])
