"""Name -> distillation method class of the compression branch. A leaf module (no torch, no config): params
validation checks `distill.method` here without importing any method; `get_method` imports the method's module
on demand. Mirrors pipeline/continual/registry.py."""
from __future__ import annotations

import importlib

# Every method `distill.method` may name -> its module under pipeline/compression (which registers the class).
MODULES: dict[str, str] = {
    "token": "token",
    "kd": "logit_kd",
    "fitnet": "fitnet",
    "channel_matching": "channel_matching",
}
# Methods that distil feature maps: they need a CNN teacher and a CNN student with distillation sites.
FEATURE_METHODS = frozenset({"fitnet", "channel_matching"})
# Not a `distill.method`: training on the labels alone (the CNN teacher; a CNN student alone).
SUPERVISED = "supervised"
_ALL_MODULES = {**MODULES, SUPERVISED: "supervised"}

METHODS: dict[str, type] = {}


def register_method(cls):
    if cls.name not in _ALL_MODULES:
        raise ValueError(f"method {cls.name!r} is not listed in pipeline/compression/registry.py MODULES")
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def check_method_name(name: str) -> str:
    if name not in MODULES:
        raise ValueError(f"unknown distillation method {name!r}; known: {', '.join(sorted(MODULES))}")
    return name


def get_method(name: str) -> type:
    if name not in _ALL_MODULES:
        check_method_name(name)
    importlib.import_module(f"pipeline.compression.{_ALL_MODULES[name]}")
    return METHODS[name]


def all_methods() -> dict[str, type]:
    """Every method, imported, `supervised` included (tests parametrised over the registry)."""
    return {name: get_method(name) for name in _ALL_MODULES}
