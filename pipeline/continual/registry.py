"""Name -> continual-learning method class. A leaf module (no torch, no config): `get_method` imports the module
that pipeline/names.py gives for a name on demand (params validation checks names there, importing no method)."""
from __future__ import annotations

from pipeline.names import CONTINUAL_METHODS as MODULES
from pipeline.registry import MethodRegistry

_REGISTRY = MethodRegistry("pipeline.continual", MODULES)
METHODS = _REGISTRY.methods
register_method = _REGISTRY.register
check_method_name = _REGISTRY.check
get_method = _REGISTRY.get
all_methods = _REGISTRY.all
