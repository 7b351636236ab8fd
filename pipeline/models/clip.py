"""CLIP models through open_clip: our small architectures, loading, saving, and feature encoders.

Checkpoints in the project's one format (pipeline/checkpoint.py); model.json names the architecture and the
image size.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline import checkpoint
from pipeline.data import loader
from pipeline.errors import InputError
from pipeline.models import weights

CONFIGS = Path(__file__).parent / "configs"


@functools.cache
def _open_clip():
    import open_clip  # slow import: only when a model is needed

    open_clip.add_model_config(CONFIGS)
    return open_clip


def available_archs() -> list[str]:
    return _open_clip().list_models()


@dataclass
class Clip:
    """An open_clip CLIP model with its tokenizer and the input normalisation it expects."""

    model: torch.nn.Module
    tokenizer: object
    arch: str
    image_size: int

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale


def build(arch: str, image_size: int, pretrained: str | None = None) -> Clip:
    """A fresh model (`pretrained=None`), or one with the weights of an open_clip tag found in the local cache
    or of a local file (safetensors, or a torch state dict read weights-only): pipeline/models/weights.py."""
    oc = _open_clip()
    if pretrained is None:
        model = oc.create_model(arch, pretrained=None, force_image_size=image_size)
    else:
        model = weights.create(oc, arch, image_size, pretrained)
    return Clip(model=model, tokenizer=oc.get_tokenizer(arch), arch=arch, image_size=image_size)


def save(clip: Clip, directory: str | Path, meta: dict) -> None:
    # The input normalisation goes with the weights: a pretrained tag may bring its own (e.g. 0.5 / 0.5), which a
    # model rebuilt from the architecture's name alone would not have.
    visual = clip.model.visual
    checkpoint.save(clip.model, directory, {"arch": clip.arch, "image_size": clip.image_size,
                                            "image_mean": list(visual.image_mean), "image_std": list(visual.image_std),
                                            **meta})


def load(directory: str | Path) -> Clip:
    meta = checkpoint.read_meta(directory, {"arch": str, "image_size": int})
    if meta["arch"] not in available_archs():
        raise InputError(f"{Path(directory) / checkpoint.META}: unknown open_clip architecture {meta['arch']!r}")
    clip = build(meta["arch"], meta["image_size"])
    checkpoint.load_weights(clip.model, directory, f"architecture {meta['arch']!r}")
    for key in ("image_mean", "image_std"):  # absent from checkpoints saved before they were recorded
        if key in meta:
            setattr(clip.model.visual, key, tuple(float(v) for v in meta[key]))
    return clip


def freeze(clip: Clip) -> Clip:
    """A teacher: eval mode, no parameter takes gradient."""
    clip.model.eval().requires_grad_(False)
    return clip


def image_input(clip: Clip, images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> the normalised float input open_clip's transforms would give."""
    visual = clip.model.visual
    mean = torch.tensor(visual.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(visual.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean.to(images.device)) / std.to(images.device)


def encode_images(clip: Clip, images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> L2-normalised image features (N, d)."""
    return F.normalize(clip.model.encode_image(image_input(clip, images)), dim=-1)


def encode_texts(clip: Clip, texts: list[str]) -> torch.Tensor:
    """Texts -> L2-normalised text features (len(texts), d)."""
    device = clip.logit_scale.device
    return F.normalize(clip.model.encode_text(clip.tokenizer(texts).to(device)), dim=-1)


def class_text_features(clip: Clip, prompts: list[list[str]]) -> torch.Tensor:
    """Per class, the normalised mean of its normalised prompt features (CLIP's prompt ensemble): (C, d)."""
    return tasks_class_text_features(clip, [prompts])


def tasks_class_text_features(clip: Clip, prompts_per_task: list[list[list[str]]]) -> torch.Tensor:
    """`class_text_features` of several tasks, stacked in task order: (sum_k C_k, d), from one text-tower
    forward over every prompt (one large batch, not a forward per task). Tasks may differ in their number
    of templates; within a task every class needs the same number."""
    shapes = []  # (classes, prompts per class) of each task
    for prompts in prompts_per_task:
        n = len(prompts[0])
        if any(len(p) != n for p in prompts):
            raise ValueError("every class needs the same number of prompts")
        shapes.append((len(prompts), n))
    feats = encode_texts(clip, [t for prompts in prompts_per_task for p in prompts for t in p])
    chunks = feats.split([c * n for c, n in shapes])
    return torch.cat([F.normalize(f.view(c, n, -1).mean(dim=1), dim=-1) for f, (c, n) in zip(chunks, shapes)])


@torch.no_grad()
def encode_images_batched(clip: Clip, images, batch_size: int, progress: str | None = None) -> torch.Tensor:
    """Features of many images (a uint8 tensor or an image source, read through pipeline/data/loader.py) in
    eval mode, without gradient (teachers, prototypes, evaluation)."""
    from tqdm import tqdm

    was_training = clip.model.training
    clip.model.eval()
    device = clip.logit_scale.device
    total = -(-len(images) // batch_size)
    out = [encode_images(clip, batch.to(device)).cpu()
           for batch in tqdm(loader.sequential(images, batch_size), total=total, desc=progress, disable=progress is None, leave=False)]
    clip.model.train(was_training)
    return torch.cat(out)
