"""CNNs built by name: any timm model, else any torchvision classification model, always randomly initialised.

timm is tried first because it is the project's CNN library (teacher.arch); torchvision fills the gaps timm
leaves, e.g. ``shufflenet_v2_x0_5`` (ShuffleNetV2, Ma et al. ECCV 2018), which timm does not have. Nothing is
ever downloaded: ``pretrained=False`` / ``weights=None``.

timm, torchvision and torch are imported inside the functions, never at import time, so importing this
module is free (0.05 s). A *name check* cannot be cheap, though: the model registries of timm and
torchvision are filled by importing them (timm imports torch and torchvision: 4-8 s on 2 CPU cores), and no
static list of names stays true across versions. ``known`` pays that import; call it where the library is
imported anyway, as pipeline/params' LIBRARIES mechanism does for timm.
"""
from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch too costs seconds to import; the config checks names without it
    from torch import nn

__all__ = ["build", "known", "library", "stem_stride", "set_stem_stride"]


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


def build(arch: str, num_classes: int, stem: int | None = None) -> nn.Module:
    """A randomly initialised classifier named ``arch`` with a ``num_classes``-way head; ``stem``: the stem's
    downsampling (see ``set_stem_stride``), None as the library builds it."""
    lib = library(arch)
    if lib == "timm":
        import timm

        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    elif lib == "torchvision":
        import torchvision.models as tvm

        model = tvm.get_model(arch, weights=None, num_classes=num_classes)
    else:
        raise _unknown(arch)
    if stem is not None:
        set_stem_stride(model, stem, arch)
    return model


def _unknown(arch: str) -> ValueError:
    import timm

    close = difflib.get_close_matches(arch, timm.list_models() + _torchvision_names(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ValueError(
        f"unknown CNN architecture {arch!r}: neither a timm model (see timm.list_models()) nor a torchvision "
        f"classification model (see torchvision.models.list_models(module=torchvision.models)){hint}"
    )


# The stem of every CNN built here is its first convolution, followed in ResNets and ShuffleNetV2 by a max
# pool the model holds as `maxpool` (timm and torchvision alike); MobileNets have no stem pool.
def _stem(model: nn.Module) -> tuple[nn.Conv2d, int]:
    """The stem's first convolution and the stride of its max pool (1 without one)."""
    from torch import nn

    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    pool = getattr(model, "maxpool", None)
    if not isinstance(pool, nn.MaxPool2d):
        return conv, 1
    return conv, pool.stride if isinstance(pool.stride, int) else pool.stride[0]


def stem_stride(model: nn.Module) -> int:
    """How much the stem downsamples: its first convolution's stride times the stem max pool's."""
    conv, pool_stride = _stem(model)
    return conv.stride[0] * pool_stride


def set_stem_stride(model: nn.Module, stride: int, arch: str = "the CNN") -> None:
    """Make the stem downsample by ``stride`` (1 or 2) instead of as built (4 for ResNets and ShuffleNetV2, 2
    for MobileNets), as the CIFAR variants of these networks do for 32 px images: the stem max pool goes first
    (an identity), then the first convolution's stride becomes 1. No weight changes shape, so checkpoints of
    either form load into the other; the meta records the stride so a model is rebuilt as it was trained."""
    from torch import nn

    built = stem_stride(model)
    if stride > built or stride not in (1, 2):
        raise ValueError(f"{arch}: its stem downsamples by {built}; a stem stride of {stride} cannot be made from it "
                         f"(1 or 2, at most {built})")
    conv, pool_stride = _stem(model)
    if pool_stride > 1 and stride < built:
        model.maxpool = nn.Identity()
        built //= pool_stride
    if stride < built:
        conv.stride = (1, 1)
