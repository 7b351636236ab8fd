"""Name -> method class, the pattern both branches' method registries share (timm's): each method module is
listed by name, registers its class with a decorator when imported, and is imported on demand by `get`. A leaf
module (no torch, no config), so params validation can check a name without importing any method."""
from __future__ import annotations

import importlib

from pipeline.names import check_name


class MethodRegistry:
    """`modules`: every name `check` accepts -> its module under `package`; `extra`: names that may be
    registered and got but not named in params (e.g. the compression branch's supervised training)."""

    def __init__(self, package: str, modules: dict[str, str], what: str = "method", extra: dict[str, str] | None = None):
        self.package, self.modules, self.what = package, modules, what
        self.all_modules = {**modules, **(extra or {})}
        self.methods: dict[str, type] = {}

    def register(self, cls):
        if cls.name not in self.all_modules:
            raise ValueError(f"method {cls.name!r} is not listed in pipeline/names.py (the {self.package} methods)")
        if cls.name in self.methods:
            raise ValueError(f"method {cls.name!r} registered twice")
        self.methods[cls.name] = cls
        return cls

    def check(self, name: str) -> str:
        return check_name(name, self.modules, self.what)

    def get(self, name: str) -> type:
        if name not in self.all_modules:
            self.check(name)
        importlib.import_module(f"{self.package}.{self.all_modules[name]}")
        return self.methods[name]

    def all(self) -> dict[str, type]:
        """Every method, imported (tests parametrised over the registry)."""
        return {name: self.get(name) for name in self.all_modules}
