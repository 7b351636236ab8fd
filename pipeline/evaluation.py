"""Zero-shot classification accuracy of a CLIP model on a task's test split."""
from __future__ import annotations

import torch

from pipeline import runtime
from pipeline.data import TaskData
from pipeline.metrics import top1
from pipeline.models import clip as clip_lib


@torch.no_grad()
def probabilities(clip: clip_lib.Clip, prompts: list[list[str]], images: torch.Tensor, batch_size: int,
                  precision: str = "fp32") -> torch.Tensor:
    """Class probabilities (N, C) of uint8 images: image features against the prompt-ensembled class texts
    (spec, step 6), at the model's logit scale. `prompts` holds each class's filled templates. The towers run
    under `precision`'s autocast (none at all in fp32); the features are scored in fp32."""
    clip.model.eval()
    with runtime.autocast(clip.logit_scale.device, precision):
        text = clip_lib.class_text_features(clip, prompts).float().cpu()
        image = clip_lib.encode_images_batched(clip, images, batch_size).float()
    return (clip.logit_scale.exp().cpu() * image @ text.T).softmax(dim=-1)


def accuracy(clip: clip_lib.Clip, task: TaskData, batch_size: int, precision: str = "fp32") -> float:
    """Top-1 accuracy in percent on the test split (pipeline.metrics.top1)."""
    return top1(probabilities(clip, task.prompts(), task.test_images, batch_size, precision), task.test_labels)


def accuracy_row(clip: clip_lib.Clip, tasks: dict[str, TaskData], batch_size: int, precision: str = "fp32") -> dict[str, float]:
    """One row of the accuracy matrix: the model's accuracy on every task, rounded for stable JSON."""
    return {name: accuracy(clip, task, batch_size, precision) for name, task in tasks.items()}
