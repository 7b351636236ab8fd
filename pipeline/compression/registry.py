"""Name -> distillation method class of the compression branch. A leaf module (no torch, no config): `get_method`
imports the module that pipeline/names.py gives for a name on demand (params validation checks `distill.method`
there, importing no method). Mirrors pipeline/continual/registry.py."""
from __future__ import annotations

from pipeline.names import DISTILL_METHODS as MODULES
from pipeline.names import SUPERVISED
from pipeline.registry import MethodRegistry

_REGISTRY = MethodRegistry("pipeline.compression", MODULES, what="distillation method", extra={SUPERVISED: "supervised"})
_ALL_MODULES = _REGISTRY.all_modules
METHODS = _REGISTRY.methods
register_method = _REGISTRY.register
check_method_name = _REGISTRY.check
get_method = _REGISTRY.get
all_methods = _REGISTRY.all  # `supervised` included
