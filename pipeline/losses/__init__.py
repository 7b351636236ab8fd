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
from pipeline.losses.distillation import hard_distillation, soft_distillation, student_ce
from pipeline.losses.kd import cosine_logits, knowledge_distillation, lwm_distillation, weight_l2, zscl_distillation
from pipeline.losses.attention import attention_distillation, grad_cam
from pipeline.losses import channel_matching  # noqa: F401  (registers channel_mse, channel_partial_l2)
from pipeline.losses.contrastive import icl, soft_icl, soft_vcl, vcl
from pipeline.losses.mutual import cohort_ce, mutual_learning

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
    "soft_distillation",
    "hard_distillation",
    "student_ce",
    "vcl",
    "icl",
    "soft_vcl",
    "soft_icl",
    "cohort_ce",
    "mutual_learning",
    "cosine_logits",
    "knowledge_distillation",
    "lwm_distillation",
    "zscl_distillation",
    "weight_l2",
    "grad_cam",
    "attention_distillation",
]
