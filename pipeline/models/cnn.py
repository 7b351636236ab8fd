"""CNNs built by name: any timm model, else any torchvision classification model, always randomly initialised.

timm is tried first because it is the project's CNN library (teacher.arch); torchvision fills the gaps timm
leaves, e.g. ``shufflenet_v2_x0_5`` (ShuffleNetV2, Ma et al. ECCV 2018), which timm does not have. Nothing is
ever downloaded: ``pretrained=False`` / ``weights=None``.

timm, torchvision and torch are imported inside the functions, never at import time, so importing this
module is free (0.05 s). A *name check* cannot be cheap, though: the model registries of timm and
torchvision are filled by importing them (timm imports torch and torchvision: 4-8 s on 2 CPU cores), and no
static list of names stays true across versions. ``known`` pays that import; call it where the library is
imported anyway, as config.py's LIBRARIES mechanism does for timm.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch too costs seconds to import; the config checks names without it
    from torch import nn

__all__ = ["build", "known", "library"]


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # classification models only (no detection, segmentation, video)


def library(arch: str) -> str | None:
    """"timm" or "torchvision", whichever builds ``arch`` (timm first); None for an unknown name."""
    import timm

    if timm.is_model(arch):
        return "timm"
    return "torchvision" if arch in _torchvision_names() else None


def known(arch: str) -> bool:
    """Whether ``build`` knows ``arch`` (imports timm and torchvision: seconds the first time)."""
    return library(arch) is not None


def build(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised classifier named ``arch`` with a ``num_classes``-way head."""
    lib = library(arch)
    if lib == "timm":
        import timm

        return timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if lib == "torchvision":
        import torchvision.models as tvm

        return tvm.get_model(arch, weights=None, num_classes=num_classes)
    import timm

    close = difflib.get_close_matches(arch, timm.list_models() + _torchvision_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown CNN architecture {arch!r}: neither a timm model (see timm.list_models()) nor a torchvision "
        f"classification model (see torchvision.models.list_models(module=torchvision.models)){hint}"
    )
