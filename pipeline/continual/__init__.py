"""Continual-learning methods behind a registry (importing this package registers them)."""
from pipeline.continual import dual_teacher, finetune, lwf, lwm, wise_ft, zscl  # noqa: F401  (registration)
from pipeline.continual.registry import METHODS, get_method

__all__ = ["METHODS", "get_method"]
