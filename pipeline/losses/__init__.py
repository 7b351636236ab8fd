"""Losses: pure functions of tensors, registered by name (see registry.py).

Importing this package imports every loss module so that their ``@register_loss`` decorators run.
"""
from pipeline.losses.registry import LOSSES, get_loss, register_loss
from pipeline.losses.clip import clip_ce, clip_contrastive
from pipeline.losses.dual_teacher import (
    adaptive_teacher_weights,
    dual_teacher_distillation,
    prototype_contrastive,
    similarity_distillation,
)

__all__ = [
    "LOSSES",
    "get_loss",
    "register_loss",
    "clip_ce",
    "clip_contrastive",
    "prototype_contrastive",
    "similarity_distillation",
    "adaptive_teacher_weights",
    "dual_teacher_distillation",
]
