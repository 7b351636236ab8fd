"""Reading params.yaml as DVC does, and the one-line error every bad value becomes (part of the typed-config core)."""
from __future__ import annotations

import re

import yaml
from pydantic import ValidationError

from pipeline.errors import InputError


class ParamsError(InputError):
    """A params.yaml problem, with a message that names the key or path."""


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does (DVC reads params.yaml that way, with ruamel):
    `5e-4` is a float, not the string PyYAML's YAML 1.1 makes of it."""


def _unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    """A mapping whose keys are unique: PyYAML keeps the last of a duplicated key silently, while DVC (ruamel)
    refuses the whole file as corrupted, after a check here would have passed it."""
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ParamsError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                              f"(first at line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


Yaml12Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def one_line(e: yaml.YAMLError) -> str:
    """PyYAML's error, which spans several lines (the problem, a quoted excerpt, a caret), in one line."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}" + (f" {e.context}" if e.context else "")
    return " ".join(str(e).split())


def first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "missing key"
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{key}: {msg}{more}" if key else f"{msg}{more}"
