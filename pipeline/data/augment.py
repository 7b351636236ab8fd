"""Training augmentation of CLIP fine-tuning (`train.augment`, off by default as in ZSCL): open_clip's
train-time transform, a random resized crop of 90-100 % of the image's area (aspect ratio 3/4 to 4/3, bicubic,
open_clip's AugmentationCfg defaults) back to the image size. Applied to uint8 batches in the loader's
workers; normalisation stays in the model.

Each image's crop is drawn from a stream seeded by (seed, step, the image's index) alone, so it is the same
whichever worker decodes the batch and whichever rank trains on it, and a run is repeatable for a seed."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as F

from pipeline.runtime import stable_seed

SCALE = (0.9, 1.0)  # open_clip's AugmentationCfg.scale default
RATIO = (3 / 4, 4 / 3)  # torchvision's RandomResizedCrop default, which open_clip keeps


@dataclass(frozen=True)
class RandomResizedCropBatch:
    """`(images, step, indices) -> images`: each uint8 image (3, S, S) cropped and resized back to S x S."""

    seed: int

    def __call__(self, images: torch.Tensor, step: int, indices: torch.Tensor) -> torch.Tensor:
        """The batch of `step` whose items are the training images `indices`: each image's crop is drawn
        from (seed, step, its index) alone, so it is the same whichever worker, or rank, makes it."""
        out = torch.empty_like(images)
        size = list(images.shape[-2:])
        # torchvision draws the crop from torch's global stream: fork it, and seed it per image.
        with torch.random.fork_rng(devices=[]):
            for k, (image, index) in enumerate(zip(images, indices.tolist())):
                torch.manual_seed(stable_seed(self.seed, step, index))
                i, j, h, w = RandomResizedCrop.get_params(image, list(SCALE), list(RATIO))
                out[k] = F.resized_crop(image, i, j, h, w, size, InterpolationMode.BICUBIC, antialias=True)
        return out
