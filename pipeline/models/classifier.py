"""Image classifiers of the compression branch as checkpoints: the timm CNN teacher and the distillation-token
student, each a safetensors file (no pickle on load) plus a JSON naming what rebuilds it.

Both take uint8 images through the same `image_input` normalisation, so teacher and student see the same
numbers."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pipeline import io
from pipeline.models.student import DistillationStudent, StudentConfig
from pipeline.errors import InputError

WEIGHTS, META = "model.safetensors", "model.json"
# Fixed, not per-data-set statistics: the embedded benchmarks and most photos sit around these values.
MEAN, STD = 0.5, 0.25


def image_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float input in roughly [-2, 2]."""
    return (images.float() / 255.0 - MEAN) / STD


def build_cnn(arch: str, num_classes: int) -> nn.Module:
    """A timm CNN from scratch (no download): any name `timm.list_models()` knows."""
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=num_classes)


def check_image_size(model: nn.Module, arch: str, image_size: int) -> None:
    """One forward of a blank batch (eval mode, no gradient, no random draw) before any training: a timm
    model fixed to another input size (a ViT at 224 px) fails here with one line instead of mid-training."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, image_size, image_size, device=next(model.parameters()).device))
    except Exception as e:  # timm raises AssertionError, RuntimeError, ValueError... for a size it cannot take
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"teacher.arch: {arch!r} cannot take {image_size}x{image_size} images (data.image_size): {first}") from None
    finally:
        model.train(was_training)


def build_student(config: StudentConfig) -> DistillationStudent:
    return DistillationStudent(config)


def save(model: nn.Module, directory: str | Path, meta: dict) -> None:
    """`meta` must hold `kind` ('cnn' with `arch`, or 'student' with `config`) and `classes`."""
    directory = Path(directory)
    # contiguous(): safetensors refuses views, which some timm layers keep in their state dicts.
    io.save_tensors(directory / WEIGHTS, {k: v.contiguous() for k, v in model.state_dict().items()})
    io.write_json(directory / META, meta)


def student_meta(model: DistillationStudent, classes: list[str], **extra) -> dict:
    return {"kind": "student", "config": asdict(model.config), "classes": list(classes), **extra}


def load(directory: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, its meta) from a directory written by `save`."""
    directory = Path(directory)
    meta = io.read_json(directory / META)
    if not isinstance(meta, dict):
        raise InputError(f"{directory / META}: expected a JSON object")
    missing = [k for k in {"cnn": ("arch", "classes"), "student": ("config", "classes")}.get(meta.get("kind"), ()) if k not in meta]
    if missing:
        raise InputError(f"{directory / META}: missing key(s) {', '.join(missing)}")
    if meta.get("kind") == "cnn":
        model = build_cnn(meta["arch"], len(meta["classes"]))
    elif meta.get("kind") == "student":
        model = build_student(StudentConfig(**meta["config"]))
    else:
        raise InputError(f"{directory / META}: 'kind' must be 'cnn' or 'student', got {meta.get('kind')!r}")
    try:
        model.load_state_dict(io.load_tensors(directory / WEIGHTS))
    except RuntimeError as e:
        raise InputError(f"{directory / WEIGHTS}: weights do not fit the model in {META} ({str(e).splitlines()[0]})") from None
    return model.eval(), meta


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class logits of either kind for inference: the CNN's, or the log of the student's fused probabilities
    (so argmax and softmax mean the same for both)."""
    if isinstance(model, DistillationStudent):
        return model.fused_probs(x).log()
    return model(x)
