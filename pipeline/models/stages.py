"""The stages of a CNN built by name (pipeline/models/cnn.py): where layer-wise MCL takes its stage features and
where an auxiliary branch starts (docs/methods/mcl.md, "Layer-wise MCL").

A network is read as  stem -> stages -> neck -> pool -> classifier,  per architecture class:
- timm ResNet: stem conv1/bn1/act1/maxpool, stages layer1-4, no neck; pooled by `forward_head(pre_logits)`.
- timm EfficientNet (mobilenetv2_*): stem conv_stem/bn1, stages blocks.0-6, neck conv_head/bn2.
- timm MobileNetV3: stem conv_stem/bn1, stages blocks.*; its conv_head comes after the pooling, inside
  `forward_head`.
- torchvision ShuffleNetV2: stem conv1/maxpool, stages stage2-4, neck conv5, pooled by a spatial mean (its
  own forward's).
The stage output is the tensor the next stage receives, the authors' `f1, f2` (models/lmcl_*_cifar.py)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class Layout:
    stem: tuple[str, ...]
    stages: tuple[str, ...]  # dotted paths, in forward order
    neck: tuple[str, ...]  # after the last stage, before the pooling
    classifier: str


def layout(model: nn.Module, arch: str = "the network") -> Layout:
    kind = type(model).__name__
    if kind == "ResNet" and hasattr(model, "layer4"):
        return Layout(("conv1", "bn1", "act1", "maxpool"), ("layer1", "layer2", "layer3", "layer4"), (), "fc")
    if kind in ("EfficientNet", "MobileNetV3") and hasattr(model, "blocks"):
        stages = tuple(f"blocks.{i}" for i in range(len(model.blocks)))
        neck = ("conv_head", "bn2") if kind == "EfficientNet" else ()
        return Layout(("conv_stem", "bn1"), stages, neck, "classifier")
    if kind == "ShuffleNetV2":
        return Layout(("conv1", "maxpool"), ("stage2", "stage3", "stage4"), ("conv5",), "fc")
    raise ValueError(f"{arch} ({kind}): layer-wise MCL knows the stages of timm ResNet, EfficientNet (mobilenetv2_*) "
                     f"and MobileNetV3, and torchvision ShuffleNetV2 (pipeline/models/stages.py)")


def pool(model: nn.Module, x: Tensor) -> Tensor:
    """The pooled feature of a map after the neck: what the network's classifier receives."""
    if hasattr(model, "forward_head"):  # timm: global pool (and MobileNetV3's conv head), no classifier
        return model.forward_head(x, pre_logits=True)
    return x.mean([2, 3])  # torchvision ShuffleNetV2's forward


class Branch(nn.Module):
    """An auxiliary branch after stage `after`: freshly initialised copies of the later stages, the neck, the
    pooling and a classifier, as the authors' `Auxiliary_Classifier` (`block_extractor{k}`, `fc{k}`) builds
    them, so its pooled feature has the width of the network's own.

    `fresh` is a new network of the same architecture; its stem and stages up to `after` are dropped."""

    def __init__(self, fresh: nn.Module, after: int, arch: str = "the network"):
        super().__init__()
        spec = layout(fresh, arch)
        if not 0 <= after < len(spec.stages) - 1:
            raise ValueError(f"{arch} has {len(spec.stages)} stages; a branch goes after one of the first "
                             f"{len(spec.stages) - 1}, not after stage {after}")
        for name in (*spec.stem, *spec.stages[: after + 1]):
            fresh.set_submodule(name, nn.Identity())
        self.network = fresh
        self.path = (*spec.stages[after + 1:], *spec.neck)
        self.classifier = spec.classifier

    def forward(self, stage_output: Tensor) -> tuple[Tensor, Tensor]:
        """(pooled feature, logits) of a stage's output."""
        x = stage_output
        for name in self.path:
            x = self.network.get_submodule(name)(x)
        feature = pool(self.network, x).flatten(1)
        return feature, self.network.get_submodule(self.classifier)(feature)


def capture(model: nn.Module, names: list[str]) -> tuple[list[Tensor], list]:
    """Forward hooks that append the outputs of the modules `names` to a list, in forward order; returns (the
    list, the hook handles to remove)."""
    outputs: list[Tensor] = []
    modules = [model.get_submodule(n) for n in names]  # a wrong name raises before any hook is registered
    return outputs, [m.register_forward_hook(lambda _m, _a, out: outputs.append(out)) for m in modules]
