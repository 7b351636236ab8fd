"""Image classifiers of the compression branch: CNNs (timm or torchvision, pipeline/models/cnn.py; the teacher
and the CNN students) and the distillation-token student, saved in the project's one checkpoint format
(pipeline/checkpoint.py) with `kind` ('cnn' with `arch`, or 'student' with `config`) and `classes`.

Both take uint8 images through the same `image_input` normalisation, so teacher and student see the same
numbers."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from pipeline import checkpoint
from pipeline.models.student import DistillationStudent, StudentConfig
from pipeline.errors import InputError

META = checkpoint.META
# Fixed, not per-data-set statistics: the embedded benchmarks and most photos sit around these values.
MEAN, STD = 0.5, 0.25


def image_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float input in roughly [-2, 2]."""
    return (images.float() / 255.0 - MEAN) / STD


def build_cnn(arch: str, num_classes: int, stem_stride: int | None = None) -> nn.Module:
    """A CNN from scratch (no download): a timm name, or a torchvision one timm lacks (ShuffleNetV2);
    `stem_stride`: its stem's downsampling, None as built."""
    from pipeline.models import cnn

    return cnn.build(arch, num_classes, stem_stride)


def cnn_meta(arch: str, stem_stride: int | None, classes: list[str], **extra) -> dict:
    """What `load` rebuilds a CNN from (the stem's stride changes no weight's shape: it must be recorded)."""
    return {"kind": "cnn", "arch": arch, "stem_stride": stem_stride, "classes": list(classes), **extra}


def check_image_size(model: nn.Module, arch: str, image_size: int, key: str = "teacher.arch") -> None:
    """One forward of a blank batch (eval mode, no gradient, no random draw) before any training: a timm
    model fixed to another input size (a ViT at 224 px) fails here with one line instead of mid-training."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, image_size, image_size, device=next(model.parameters()).device))
    except Exception as e:  # timm raises AssertionError, RuntimeError, ValueError... for a size it cannot take
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{key}: {arch!r} cannot take {image_size}x{image_size} images (data.image_size): {first}") from None
    finally:
        model.train(was_training)


def build_student(config: StudentConfig) -> DistillationStudent:
    return DistillationStudent(config)


def save(model: nn.Module, directory: str | Path, meta: dict) -> None:
    """`meta` must hold `kind` ('cnn' with `arch`, or 'student' with `config`) and `classes`."""
    checkpoint.save(model, directory, meta)


def student_meta(model: DistillationStudent, classes: list[str], **extra) -> dict:
    return {"kind": "student", "config": asdict(model.config), "classes": list(classes), **extra}


def load(directory: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, its meta) from a directory written by `save`."""
    meta = checkpoint.read_meta(directory, {"kind": str, "classes": list})
    if meta["kind"] == "cnn":
        meta = checkpoint.read_meta(directory, {"arch": str})
        model = build_cnn(meta["arch"], len(meta["classes"]), meta.get("stem_stride"))
        what = f"the CNN {meta['arch']!r}"
    elif meta["kind"] == "cohort":
        from pipeline.models import cohort

        meta = checkpoint.read_meta(directory, {"networks": list, "embed_dim": int})
        model = cohort.build(meta["networks"], len(meta["classes"]), meta.get("stem_stride"), meta["embed_dim"])
        what = f"the cohort {meta['networks']}"
    elif meta["kind"] == "student":
        meta = checkpoint.read_meta(directory, {"config": dict})
        model, what = build_student(StudentConfig(**meta["config"])), "the student config"
    else:
        raise InputError(f"{Path(directory) / META}: 'kind' must be 'cnn', 'student' or 'cohort', got {meta['kind']!r}")
    return checkpoint.load_weights(model, directory, what).eval(), meta


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class logits of any kind for inference: the CNN's, or the log of the student's fused probabilities or
    of a cohort's ensemble (so argmax and softmax mean the same for all)."""
    if isinstance(model, DistillationStudent):
        return model.fused_probs(x).log()
    from pipeline.models.cohort import Cohort, ensemble_probs

    if isinstance(model, Cohort):
        return ensemble_probs(model(x)).log()
    return model(x)
