"""Name -> distillation method class of the compression branch. A leaf module (no torch, no config): params
validation checks `distill.method` here without importing any method; `get_method` imports the method's module
on demand. Mirrors pipeline/continual/registry.py."""
from __future__ import annotations

from pipeline.registry import MethodRegistry

# Every method `distill.method` may name -> its module under pipeline/compression (which registers the class).
MODULES: dict[str, str] = {
    "token": "token",
    "kd": "logit_kd",
    "fitnet": "fitnet",
    "channel_matching": "channel_matching",
    "dml": "dml",
    "mcl": "mcl",
    "lmcl": "lmcl",
}
# Methods that distil feature maps: they need a CNN teacher and a CNN student with distillation sites.
FEATURE_METHODS = frozenset({"fitnet", "channel_matching"})
# Online methods: a cohort trained together without a teacher (stage `cohort`, `cohort.method`), not `distill.method`.
ONLINE_METHODS = frozenset({"dml", "mcl", "lmcl"})
# Not a `distill.method`: training on the labels alone (the CNN teacher; a CNN student alone).
SUPERVISED = "supervised"

_REGISTRY = MethodRegistry("pipeline.compression", MODULES, what="distillation method", extra={SUPERVISED: "supervised"})
_ALL_MODULES = _REGISTRY.all_modules
METHODS = _REGISTRY.methods
register_method = _REGISTRY.register
check_method_name = _REGISTRY.check
get_method = _REGISTRY.get
all_methods = _REGISTRY.all  # `supervised` included
