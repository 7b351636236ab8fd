"""A pretrained CLIP's weights from `model.pretrained`: a local file read without unpickling code, or an
open_clip tag found in the local cache, never downloaded.

open_clip 3.3.0 does the loading itself (`create_model(pretrained=<file>)`: safetensors by suffix, else
`torch.load(weights_only=True)`; a nested `state_dict`, a DDP `module.` prefix, third-party key layouts and
position embeddings resized to `force_image_size`; strict `load_state_dict`), and this module leaves that to
it. What it adds, and why:
- a torch file is first read here with `torch.load(weights_only=True)` and nothing else: open_clip retries a
  load that raised TypeError with a plain `torch.load`, which `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turns into
  a full unpickle. A file refused here never reaches open_clip, and one read here reads the same way there,
  so that retry never runs;
- a tag is looked up in the Hugging Face cache on disk only: open_clip's download asks the hub for a newer
  revision (and fetches it), and where the network drops packets it waits for a timeout first; the file found
  is handed to open_clip as a local file, with the tag's preprocessing;
- every failure is one InputError line naming `model.pretrained`, the file or tag, and what to do.
"""
from __future__ import annotations

import os
import re
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import InputError


def resolve(oc, arch: str, pretrained: str) -> tuple[Path, str, dict | None]:
    """The weights file `pretrained` names (an open_clip tag of `arch`, checked first as open_clip does, found
    in the local cache; or a local file), checked to be plain weights (a torch file read weights-only), without
    building the model: `python -m pipeline.tools.check` calls it before DVC removes the pretrain stage's outputs.
    Returns (file, how errors name it, the tag's preprocessing or None). `oc` is the open_clip module."""
    cfg = oc.get_pretrained_cfg(arch, pretrained)
    if cfg:
        path = cached_tag_file(arch, pretrained, cfg)
        where, preprocess = f"tag {pretrained!r} ({path})", tag_preprocess(oc, arch, pretrained, cfg)
    elif Path(pretrained).is_file():
        path, where, preprocess = Path(pretrained), repr(pretrained), None
    else:
        raise InputError(f"model.pretrained: {pretrained!r} is neither a file nor an open_clip tag of {arch!r}")
    where = f"model.pretrained: could not load {where} for {arch!r}"
    if path.suffix != ".safetensors":  # open_clip's own test: anything else goes to torch.load
        check_plain_weights(path, where)
    return path, where, preprocess


def create(oc, arch: str, image_size: int, pretrained: str) -> nn.Module:
    """The open_clip model `arch` at `image_size` with the weights `pretrained` names (`resolve`)."""
    path, where, preprocess = resolve(oc, arch, pretrained)
    try:
        return oc.create_model(arch, pretrained=str(path), force_image_size=image_size, force_preprocess_cfg=preprocess)
    except Exception as e:  # weights of another architecture; a corrupt safetensors header; an empty state dict
        if str(e).startswith("Error(s) in loading state_dict"):
            raise InputError(f"{where}: its weights do not fit {arch!r} ({mismatch(e)})") from None
        raise InputError(f"{where} ({_first_sentence(e)})") from None


def tag_preprocess(oc, arch: str, tag: str, cfg: dict) -> dict:
    """What open_clip takes from a tag's config when given the tag, for when it is given the tag's file: the
    normalisation (mean, std, ...; the size stays the model's, as on the tag path), and a warning when the tag
    was trained with another activation than `arch` uses (e.g. OpenAI's weights and QuickGELU)."""
    trained, built = cfg.get("quick_gelu", False), (oc.get_model_config(arch) or {}).get("quick_gelu", False)
    if trained != built:
        warnings.warn(f"QuickGELU mismatch between {arch!r} (quick_gelu={built}) and pretrained tag {tag!r} "
                      f"(quick_gelu={trained})", UserWarning, stacklevel=3)
    return {k: v for k, v in cfg.items() if k != "size"}  # open_clip keeps only its preprocessing keys


def check_plain_weights(path: Path, where: str) -> dict:
    """Refuse a torch file that is not a plain state dict: read with `torch.load(weights_only=True)`, which
    builds tensors and containers only and refuses any other global (a pickle calling `os.system` stops at
    that global, before anything runs). Memory-mapped where the format allows (the zip format of
    `torch.save` since torch 1.6), so this read costs little before open_clip's own."""
    try:
        with warnings.catch_warnings():  # torch warns twice about the pickle it is about to refuse: the refusal says it
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # UnpicklingError, a TorchScript archive (code), a truncated or foreign file
        raise InputError(f"{where}: not a plain weights file (torch.load with weights_only=True: {_first_sentence(e)})") from None
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{where}: not a plain weights file (holds {type(obj).__name__}, not a state dict)")
    return obj


def check_fits(oc, arch: str, image_size: int, pretrained: str) -> None:
    """The weights `pretrained` names have every tensor of `arch` at its shape, read from the file's header
    (safetensors) or its weights-only load, against `arch` built on the meta device (no memory, no weights):
    what the pretrain stage's strict load would refuse, refused before DVC removes its outputs. Positional
    embeddings may differ in size (open_clip resizes them to `image_size`)."""
    path, where, _ = resolve(oc, arch, pretrained)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as e:  # a text file named .safetensors: safetensors' own header errors
            raise InputError(f"{where}: not a safetensors file ({_first_sentence(e)})") from None
    else:
        obj = check_plain_weights(path, where)
        obj = obj.get("state_dict", obj) if isinstance(obj.get("state_dict"), dict) else obj
        shapes = {k.removeprefix("module."): tuple(v.shape) for k, v in obj.items() if isinstance(v, torch.Tensor)}
    model = oc.create_model(arch, pretrained=None, force_image_size=image_size, device="meta")
    if hasattr(model, "text") and not any(k.startswith("text.") for k in shapes):  # open_clip converts these
        from open_clip.model import convert_to_custom_text_state_dict

        shapes = convert_to_custom_text_state_dict(shapes)
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in wanted if k not in shapes]
    if missing:
        raise InputError(f"{where}: its weights do not fit {arch!r} (missing {len(missing)} of {len(wanted)} "
                         f"key(s), e.g. {missing[0]!r})")
    wrong = [k for k in wanted if shapes[k] != wanted[k] and "positional_embedding" not in k]
    if wrong:
        raise InputError(f"{where}: its weights do not fit {arch!r} (size mismatch for {wrong[0]!r}: "
                         f"{list(shapes[wrong[0]])} in the file, {list(wanted[wrong[0]])} in the model"
                         + (f"; and {len(wrong) - 1} more)" if len(wrong) > 1 else ")"))


def cached_tag_file(arch: str, tag: str, cfg: dict) -> Path:
    """The weights of open_clip tag `tag` (`cfg`: its pretrained config) in the local Hugging Face cache, in
    open_clip's order (the safetensors alternative first), looked up on disk only. The cache is
    huggingface_hub's: `HF_HUB_CACHE`, else `$HF_HOME/hub`, read when the process starts."""
    from huggingface_hub import constants, try_to_load_from_cache
    from open_clip.constants import HF_WEIGHTS_NAME
    from open_clip.pretrained import _get_safe_alternatives  # open_clip's own preference, not a copy of it

    repo, filename = os.path.split(cfg.get("hf_hub", ""))  # 'org/name/' or 'org/name/file', as open_clip splits it
    cache = Path(constants.HF_HUB_CACHE)
    if not repo:
        raise InputError(f"model.pretrained: open_clip tag {tag!r} of {arch!r} names no Hugging Face hub "
                         f"repository to find in the local cache ({cache}); give a local weights file")
    filename = filename or HF_WEIGHTS_NAME
    for name in (*_get_safe_alternatives(filename), filename):
        found = try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(found, str):
            return Path(found)
    raise InputError(
        f"model.pretrained: open_clip tag {tag!r} of {arch!r} is not in the local cache (looked for {repo} in "
        f"{cache}; HF_HUB_CACHE or HF_HOME move it) and nothing is downloaded here: run "
        f"open_clip.create_model({arch!r}, pretrained={tag!r}) once on a machine with internet and copy that "
        f"cache here, or give a local weights file")


def mismatch(e: RuntimeError) -> str:
    """torch's strict `load_state_dict` error, which lists every key, in brief: the count and first key of
    each kind, and the first size mismatch."""
    parts, sizes = [], []
    for line in str(e).splitlines()[1:]:
        line = line.strip()
        kind, _, keys = line.partition(" key(s) in state_dict: ")
        names = re.findall(r'"([^"]+)"', keys)
        if names:
            parts.append(f"{kind.lower()} {len(names)} key(s), e.g. {names[0]!r}")
        elif line.startswith("size mismatch"):
            sizes.append(line.rstrip("."))
    if sizes:
        parts.append(sizes[0] + (f" (and {len(sizes) - 1} more)" if len(sizes) > 1 else ""))
    return "; ".join(parts) or _first_sentence(e)


def _first_sentence(e: BaseException) -> str:
    """The part of an exception's message that says what went wrong, on one line. torch's weights-only error
    opens with a paragraph of advice on loading the file unsafely; its reason is the next paragraph."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", str(e)) if p.strip()]
    if len(paragraphs) > 1 and paragraphs[0].startswith("Weights only load failed"):
        paragraphs = paragraphs[1:]
    line = paragraphs[0].splitlines()[0].strip() if paragraphs else type(e).__name__
    return line.split(". ")[0].rstrip(".")
