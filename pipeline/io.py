"""Atomic file output and pickle-free checkpoints.

Everything is written to a temporary file in the destination folder and renamed into place, so a killed
stage never leaves a half-written file and the previous result survives a failure.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from pipeline.errors import InputError, MissingInput


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600, and a writer that replaces the file by its own (safetensors' save_file) makes
        # its own mode: the output gets the mode open() would give it, as `dvc checkout` does, whatever wrote it.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder beside `path`; it replaces `path`, whatever was in it, only if the block
    succeeds. An output folder then holds exactly what its stage wrote this time (no stray file, no state of
    another method), and a failed stage leaves the previous folder whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield staging
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)  # a directory cannot be renamed onto a non-empty one
        os.replace(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    """Sorted keys and a trailing newline: the same object always gives the same bytes. Strict JSON: an
    undefined number (NaN, such as Transfer of a one-task chain, or an infinity) is written `null`."""
    write_text(path, json.dumps(_finite_or_null(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite_or_null(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(v) for v in obj]
    return obj


def read_utf8(path: str | Path) -> str:
    """A user's text file (class names, caption lists); an encoding error names the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None


def read_json(path: str | Path):
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInput(f"{path}: not found (has its stage run?)") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: str | Path, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, or only those named in `keys` (read alone, not the whole file:
    a prototypes file also holds the features of every training image)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInput(f"{path}: not found (has its stage run?)")
    try:
        if keys is None:
            return load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in keys}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        wanted = "" if keys is None else f" with tensors {keys}"
        raise InputError(f"{path}: not a readable safetensors file{wanted} ({e})") from None
