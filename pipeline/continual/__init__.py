"""Continual-learning methods behind a registry; `get_method(name)` imports a method's module on demand."""
from pipeline.continual.registry import METHODS, all_methods, get_method

__all__ = ["METHODS", "all_methods", "get_method"]
