"""The one checkpoint format of the project, for CLIP models and classifiers alike: a folder with
`model.safetensors` (the state dict; loading never unpickles) and `model.json` (what rebuilds the model, the
params that made it, provenance), so any stage can rebuild a model without the code that trained it."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline import io
from pipeline.errors import InputError

WEIGHTS, META = "model.safetensors", "model.json"


def save(model: nn.Module, directory: str | Path, meta: dict) -> None:
    directory = Path(directory)
    # contiguous(): safetensors refuses views, which some timm layers keep in their state dicts.
    io.save_tensors(directory / WEIGHTS, {k: v.contiguous() for k, v in model.state_dict().items()})
    io.write_json(directory / META, meta)


def read_meta(directory: str | Path, required: dict[str, type]) -> dict:
    """model.json as a dict, with each key of `required` present and of its type (one line naming the file
    and key otherwise)."""
    path = Path(directory) / META
    meta = io.read_json(path)
    if not isinstance(meta, dict):
        raise InputError(f"{path}: expected a JSON object")
    for key, kind in required.items():
        if not isinstance(meta.get(key), kind):
            raise InputError(f"{path}: needs {key!r} ({kind.__name__})")
    return meta


def load_weights(model: nn.Module, directory: str | Path, what: str) -> nn.Module:
    """Load model.safetensors into `model` (built from model.json); `what` names the architecture in the
    error when the weights do not fit it (the architecture's config changed since it was saved)."""
    path = Path(directory) / WEIGHTS
    try:
        model.load_state_dict(io.load_tensors(path))
    except RuntimeError as e:
        lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(e).__name__)
        raise InputError(f"{path}: weights do not fit {what} ({detail})") from None
    return model

