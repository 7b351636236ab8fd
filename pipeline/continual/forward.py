"""The student's whole forward of one training step as one module call: images and prompts in, features out.

DistributedDataParallel averages the gradients of the parameters used between one call of its module and the
next backward, so a step must reach the student through that one call: several calls before a backward (ZSCL's
reference batch, LwF's base-class texts) or a use of the student outside it would leave DDP's gradient hooks out
of step. `StudentForward` takes everything a method's step feeds the student (the task's batch and ZSCL's
reference images, class prompts of one task or several, captions, LwM's Grad-CAM batch) and runs, in that one
call, the very functions the methods called on the student before (pipeline/models/clip.py, gradcam.py), one
after the other and unchanged: with one process (no DDP wrapper, pipeline/distributed.py) a step runs exactly
the operations it ran before, so its results are the same to the bit.
"""
from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from pipeline.continual.gradcam import feature_map_and_features
from pipeline.models import clip as clip_lib

Prompts = list[list[str]]  # one task's prompts: per class, its templates filled in


class StudentForward(nn.Module):
    """`forward(images, prompts, texts, cam)` -> a flat tuple, in this order:

    - for each image batch of `images` (uint8 (B, 3, H, W)): its L2-normalised features (B, d), with gradient;
    - for each group of `prompts` (a list of tasks' prompts): `tasks_class_text_features`, (sum_k C_k, d);
    - for each list of `texts` (captions): `encode_texts`, (len, d);
    - with `cam` = (images, stage): LwM's Grad-CAM map A and the unnormalised image features
      (`feature_map_and_features`), two tensors.

    The module holds the student's CLIP model (its parameters are the module's, as DDP needs); the tokenizer
    and input normalisation come with `clip`."""

    def __init__(self, clip: clip_lib.Clip):
        super().__init__()
        self.model = clip.model
        self.clip = clip  # not a module: the dataclass carrying the same model, its tokenizer and sizes

    def forward(self, images: Sequence[Tensor] = (), prompts: Sequence[Sequence[Prompts]] = (),
                texts: Sequence[list[str]] = (), cam: tuple[Tensor, int] | None = None) -> tuple[Tensor, ...]:
        clip = self.clip
        out = [clip_lib.encode_images(clip, x) for x in images]
        out += [clip_lib.tasks_class_text_features(clip, list(group)) for group in prompts]
        out += [clip_lib.encode_texts(clip, t) for t in texts]
        if cam is not None:
            out += feature_map_and_features(clip, cam[0], stage=cam[1])
        return tuple(out)
