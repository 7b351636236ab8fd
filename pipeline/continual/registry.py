"""Name -> continual-learning method class. A leaf module (no torch, no config): params validation checks a
method's name here without importing any method, and `get_method` imports the method's module on demand."""
from __future__ import annotations

import importlib

# Every method params.yaml may name -> its module under pipeline/continual (which registers the class).
MODULES: dict[str, str] = {
    "dual_teacher": "dual_teacher",
    "finetune": "finetune",
    "lwf": "lwf",
    "lwm": "lwm",
    "wise_ft": "wise_ft",
    "zscl": "zscl",
}
# Methods that read E0's caption corpus (data/corpus), ZSCL's reference batches: Params refuses a folder
# benchmark that gives them none.
CORPUS_METHODS = frozenset({"zscl"})

METHODS: dict[str, type] = {}


def register_method(cls):
    if cls.name not in MODULES:
        raise ValueError(f"method {cls.name!r} is not listed in pipeline/continual/registry.py MODULES")
    if cls.name in METHODS:
        raise ValueError(f"method {cls.name!r} registered twice")
    METHODS[cls.name] = cls
    return cls


def check_method_name(name: str) -> str:
    if name not in MODULES:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(MODULES))}")
    return name


def get_method(name: str) -> type:
    importlib.import_module(f"pipeline.continual.{MODULES[check_method_name(name)]}")
    return METHODS[name]


def all_methods() -> dict[str, type]:
    """Every method, imported (tests parametrised over the registry)."""
    return {name: get_method(name) for name in MODULES}
