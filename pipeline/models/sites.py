"""Distillation sites: where teacher and student feature maps are taken, decided by the network family
(docs/methods/channel_matching.md, "Distillation sites"; Matching Guided Distillation, Yue et al. ECCV 2020).

One site per block, named by the block's dotted path (``layer2.1``, ``blocks.4.2``, ``stage3.7``):
- ResNet (timm BasicBlock / Bottleneck): after the residual addition, before the block's final ReLU. timm's
  block ends ``x += shortcut; x = self.act2(x)`` (``act3`` in a Bottleneck), so the site is the input of that
  activation module (forward pre-hook). MGD takes the same tensor: its cls/models/resnet.py moves the ReLU
  to the start of the next block and ``extract_feature(preReLU=True)`` returns the block outputs.
- MobileNet (timm DepthwiseSeparableConv / InvertedResidual / ConvBnAct; torchvision mobilenet_v2 and
  mobilenet_v3 InvertedResidual): after the block's last BatchNorm, before its activation: the input of
  that BN-act's ``.act`` (timm fuses them in BatchNormAct2d) when it has one (ConvBnAct, MobileNet-V1's DS
  blocks). In an inverted residual the last BN is the projection of the linear bottleneck and has no
  activation at all, so the site is the block output (bottleneck BN + shortcut; no ReLU ever follows).
  Why the bottleneck and not the expanded layer's BN-ReLU6: Sandler et al. (MobileNetV2, CVPR 2018) show
  the bottlenecks carry all the information, the expansion being "an implementation detail"; it is the
  map the next block receives, like the ResNet and ShuffleNet sites; and channel matching needs the
  student's n <= the teacher's m, which the bottleneck keeps (mobilenetv2_050: 8-160 channels against
  resnet18's 64-512) and the 6x expansion breaks (96 at 8x8 against 64). MGD instead takes the depthwise
  BN before ReLU6 of the expanded layer (cls/models/mobilenetv2.py: ``features[k].conv[1][0:2]``,
  ``get_bn_before_relu``), with a ResNet-50 teacher of 256-2048 channels.
- ShuffleNetV2 (torchvision InvertedResidual): after the channel shuffle, i.e. the block output (its forward
  ends ``out = channel_shuffle(out, 2); return out``). In torchvision both halves have passed a ReLU, so
  this map is >= 0; MGD (cls/models/shufflenetv2.py, ``pre_act``) moves those ReLUs into the next block.

Default sites: the last block at each resolution (the next block downsamples), MGD's choice for ResNet.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["FAMILIES", "Site", "SitePair", "family", "candidate_sites", "default_sites", "FeatureTap",
           "site_shapes", "match_sizes", "pair_sites", "resolve_pairs"]

FAMILIES = ("resnet", "mobilenet", "shufflenet")
# Block classes by (module, class) name, looked up in sys.modules: a model can only hold instances of classes
# already imported, so nothing is imported here.
_BLOCKS = {
    "resnet": (("timm.models.resnet", "BasicBlock"), ("timm.models.resnet", "Bottleneck")),
    "mobilenet": tuple(("timm.models._efficientnet_blocks", c)
                       for c in ("DepthwiseSeparableConv", "InvertedResidual", "ConvBnAct"))
    + (("torchvision.models.mobilenetv2", "InvertedResidual"), ("torchvision.models.mobilenetv3", "InvertedResidual")),
    "shufflenet": (("torchvision.models.shufflenetv2", "InvertedResidual"),),
}
_SUPPORTED = ("ResNet (timm resnet*), MobileNet (timm mobilenetv2_*/mobilenetv3_*, torchvision mobilenet_v2/"
              "mobilenet_v3_*) and ShuffleNetV2 (torchvision shufflenet_v2_*)")
HW = tuple[int, int]


@dataclass(frozen=True)
class Site:
    name: str  # the block's dotted path: what users and logs call the site
    module: str  # dotted path of the hooked module
    hook: Literal["input", "output"]  # its input (forward pre-hook) or its output (forward hook)


class SitePair(NamedTuple):
    teacher: Site
    student: Site
    pool_to: HW | None  # None: same size; else F.adaptive_avg_pool2d(teacher_map, pool_to) first


def _classes(fam: str) -> tuple[type, ...]:
    return tuple(getattr(sys.modules[mod], cls) for mod, cls in _BLOCKS[fam] if mod in sys.modules)


def _blocks(model: nn.Module) -> tuple[str, list[tuple[str, nn.Module]]]:
    """The family and its outermost blocks in registration order (forward order in these networks)."""
    found = {}
    for fam in FAMILIES:
        classes, blocks = _classes(fam), []
        for name, m in model.named_modules():
            if isinstance(m, classes) and not any(name.startswith(b + ".") for b, _ in blocks):
                blocks.append((name, m))
        if blocks:
            found[fam] = blocks
    if not found:
        raise ValueError(f"unsupported network {type(model).__name__}: distillation sites are defined for "
                         f"the blocks of {_SUPPORTED}")
    if len(found) > 1:
        raise ValueError(f"network {type(model).__name__} mixes the blocks of {sorted(found)}: ambiguous sites")
    return next(iter(found.items()))


def family(model: nn.Module) -> str:
    """"resnet" | "mobilenet" | "shufflenet", from the block types the model holds."""
    return _blocks(model)[0]


def _site(fam: str, name: str, block: nn.Module) -> Site:
    if fam == "resnet":
        return Site(name, f"{name}.{'act3' if hasattr(block, 'act3') else 'act2'}", "input")
    if fam == "mobilenet":
        bn_acts = [(n, m) for n, m in block.named_modules() if isinstance(m, nn.BatchNorm2d) and hasattr(m, "act")]
        if bn_acts and not isinstance(bn_acts[-1][1].act, nn.Identity):
            return Site(name, f"{name}.{bn_acts[-1][0]}.act", "input")
    return Site(name, name, "output")  # linear bottleneck; ShuffleNet's shuffle


def candidate_sites(model: nn.Module) -> list[Site]:
    """Every site of the model, one per block, in forward order."""
    fam, blocks = _blocks(model)
    return [_site(fam, name, block) for name, block in blocks]


def _stride(block: nn.Module) -> int:
    strides = [getattr(m, "stride", 1) for m in block.modules()]
    return max([1] + [s[0] if isinstance(s, tuple) else s for s in strides if isinstance(s, (int, tuple))])


def default_sites(model: nn.Module) -> list[Site]:
    """The last site at each resolution: every block the next of which downsamples, and the last block."""
    fam, blocks = _blocks(model)
    strides = [_stride(b) for _, b in blocks]
    return [_site(fam, n, b) for i, (n, b) in enumerate(blocks) if i + 1 == len(blocks) or strides[i + 1] > 1]


class FeatureTap:
    """``with FeatureTap(model, sites) as tap: model(x)`` -> ``tap.features[site.name]``.

    Input sites are cloned: the activation they feed is in place in timm, and would overwrite them. The
    tensors keep their graph (a student's loss can backpropagate through them); outputs and parameters are
    untouched, and the hooks are removed on exit. A second forward overwrites the features.
    """

    def __init__(self, model: nn.Module, sites: Iterable[Site]):
        self.model, self.sites = model, list(sites)
        self.features: dict[str, Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> FeatureTap:
        modules = dict(self.model.named_modules())
        try:
            for site in self.sites:
                if site.module not in modules:
                    raise ValueError(f"site {site.name}: the model has no module {site.module!r}")
                m = modules[site.module]
                self._handles.append(m.register_forward_pre_hook(self._pre(site.name)) if site.hook == "input"
                                     else m.register_forward_hook(self._post(site.name)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _pre(self, name: str):
        return lambda module, args: self.features.__setitem__(name, args[0].clone())

    def _post(self, name: str):
        return lambda module, args, output: self.features.__setitem__(name, output)


@torch.no_grad()
def site_shapes(model: nn.Module, sites: Sequence[Site], image_size: int | HW,
                in_chans: int = 3) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) of each site, by one eval-mode forward of a zeros image; every module's mode is restored."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    modes = [(m, m.training) for m in model.modules()]
    p = next(model.parameters())
    model.eval()
    try:
        with FeatureTap(model, sites) as tap:
            model(torch.zeros(1, in_chans, h, w, device=p.device, dtype=p.dtype))
    finally:
        for m, training in modes:
            m.training = training
    missing = [s.name for s in sites if s.name not in tap.features]
    if missing:
        raise RuntimeError(f"sites {missing} were not reached by a forward pass of {type(model).__name__}")
    return {s.name: tuple(tap.features[s.name].shape[1:]) for s in sites}


def match_sizes(teacher_hw: dict[str, HW], student_hw: dict[str, HW], min_size: int = 2
                ) -> list[tuple[str, str, HW | None]]:
    """(teacher, student, pool_to) by spatial size: the teacher site of the same size, else the smallest larger
    one, average-pooled to the student's size; student maps under min_size x min_size (no spatial pattern)
    and those no teacher map covers are skipped."""
    pairs = []
    for s_name, (h, w) in student_hw.items():
        if h < min_size or w < min_size:
            continue
        same = [t for t, hw in teacher_hw.items() if tuple(hw) == (h, w)]
        larger = [t for t, (th, tw) in teacher_hw.items() if th >= h and tw >= w]
        if same:
            pairs.append((same[-1], s_name, None))
        elif larger:
            pairs.append((min(larger, key=lambda t: teacher_hw[t][0] * teacher_hw[t][1]), s_name, (h, w)))
    return pairs


def _hw(model: nn.Module, sites: list[Site], image_size: int | HW) -> dict[str, HW]:
    return {n: (c_h_w[1], c_h_w[2]) for n, c_h_w in site_shapes(model, sites, image_size).items()}


def pair_sites(teacher: nn.Module, student: nn.Module, image_size: int | HW, min_size: int = 2) -> list[SitePair]:
    """The default pairs: each default student site with the teacher default site of its spatial size."""
    t_sites, s_sites = default_sites(teacher), default_sites(student)
    t_by, s_by = {s.name: s for s in t_sites}, {s.name: s for s in s_sites}
    matched = match_sizes(_hw(teacher, t_sites, image_size), _hw(student, s_sites, image_size), min_size)
    return [SitePair(t_by[t], s_by[s], pool) for t, s, pool in matched]


def _lookup(by_name: dict[str, Site], name: str, role: str) -> Site:
    if name not in by_name:
        raise ValueError(f"unknown {role} site {name!r}; valid: {', '.join(by_name)}")
    return by_name[name]


def resolve_pairs(teacher: nn.Module, student: nn.Module, names: Iterable[tuple[str, str]],
                  image_size: int | HW) -> list[SitePair]:
    """User-given (teacher site, student site) name pairs, checked against the candidate sites and sizes."""
    t_by = {s.name: s for s in candidate_sites(teacher)}
    s_by = {s.name: s for s in candidate_sites(student)}
    chosen = [(_lookup(t_by, t, "teacher"), _lookup(s_by, s, "student")) for t, s in names]
    t_hw = _hw(teacher, [t for t, _ in chosen], image_size)
    s_hw = _hw(student, [s for _, s in chosen], image_size)
    pairs = []
    for t, s in chosen:
        (th, tw), (h, w) = t_hw[t.name], s_hw[s.name]
        if th < h or tw < w:
            raise ValueError(f"site pair ({t.name}, {s.name}): the teacher map {th}x{tw} is smaller than the "
                             f"student's {h}x{w}; a teacher map can only be average-pooled down")
        pairs.append(SitePair(t, s, None if (th, tw) == (h, w) else (h, w)))
    return pairs
