"""Writing values into params.yaml, the user's file, as a person would: the one value changed, every comment,
`null`, quote and line of layout elsewhere kept byte for byte (ruamel's round trip, DVC's own YAML library, told
not to fold long lines and to write None as `null`). `python -m pipeline.tools.search --apply` writes the chosen
values through it."""
from __future__ import annotations

from pathlib import Path

MISSING = object()


def _round_trip():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096  # never fold a line: params.yaml's long flow mappings stay one line each
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def get(tree: dict, key: str) -> object:
    """The value at a dotted key of a nested dict, or MISSING."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


def edit(path: Path, sets: dict[str, object]) -> dict[str, tuple[object, object]]:
    """Set dotted keys (each must exist) in the YAML file at `path`, in place; a value that is a dict replaces the
    mapping as one flow mapping (a line like `variant: {key: value, ...}`). Returns key -> (old, new) of the
    values that changed; an unchanged file is not rewritten."""
    from ruamel.yaml.comments import CommentedMap

    y = _round_trip()
    doc = y.load(Path(path).read_text())
    changed = {}
    for key, value in sets.items():
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise KeyError(f"{path}: no key {key}")
        if node[leaf] == value:
            continue
        changed[key] = (node[leaf], value)
        if isinstance(value, dict):
            value = CommentedMap(value)
            value.fa.set_flow_style()
        node[leaf] = value
    if changed:
        with open(path, "w") as f:
            y.dump(doc, f)
    return changed
