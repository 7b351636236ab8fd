"""A cohort of networks trained together (online distillation: DML, MCL; docs/methods/mcl.md): M
classifiers built by name, each with a projection head on its pooled feature (Linear -> ReLU -> Linear to
`embed_dim`, L2-normalised, as in the authors' code) that only training uses.

The pooled feature is the input of each network's classifier layer, read by a forward pre-hook, so any timm or
torchvision CNN joins a cohort without a per-family wrapper."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.stages import capture


def classifier_layer(model: nn.Module, num_classes: int) -> nn.Linear:
    """The layer that makes the logits: the last Linear with `num_classes` outputs (timm's `get_classifier()`,
    torchvision's `fc` or `classifier[-1]`)."""
    last = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not last:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {num_classes} outputs to read features at")
    return last[-1]


class ProjectionHead(nn.Module):
    def __init__(self, in_features: int, embed_dim: int = 128):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_features, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim))

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.proj(features), dim=1)


class Cohort(nn.Module):
    """M networks and their projection heads. `forward` gives the (M, B, K) logits; `embed` also the embeddings."""

    def __init__(self, networks: list[nn.Module], num_classes: int, embed_dim: int = 128):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self._classifiers = [classifier_layer(n, num_classes) for n in networks]
        self.heads = nn.ModuleList(ProjectionHead(c.in_features, embed_dim) for c in self._classifiers)

    def __len__(self) -> int:
        return len(self.networks)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([n(x) for n in self.networks])

    def embed(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """((M, B, K) logits, each network's L2-normalised embedding of its pooled feature)."""
        logits, pooled, _ = self.taps(x)
        return logits, [head(f) for head, f in zip(self.heads, pooled)]

    def taps(self, x: Tensor, stages: list[list[str]] | None = None) -> tuple[Tensor, list[Tensor], list[list[Tensor]]]:
        """((M, B, K) logits, each network's pooled feature (B, d_a), and the outputs of network a's modules
        `stages[a]` (dotted paths, in forward order; none without `stages`))."""
        logits, pooled, taken = [], [], []
        for a, (network, layer) in enumerate(zip(self.networks, self._classifiers)):
            feature: list[Tensor] = []
            outputs, handles = capture(network, stages[a] if stages else [])
            handles.append(layer.register_forward_pre_hook(lambda _m, args: feature.append(args[0])))
            try:
                logits.append(network(x))
            finally:
                for h in handles:
                    h.remove()
            pooled.append(feature[0].flatten(1))
            taken.append(outputs)
        return torch.stack(logits), pooled, taken


def build(networks: list[str], num_classes: int, stem_stride: int | None = None, embed_dim: int = 128) -> Cohort:
    """A fresh cohort of the CNNs named (timm or torchvision, pipeline/models/cnn.py), in order; the caller seeds
    torch first, so every method of a seed starts from the same weights."""
    from pipeline.models import cnn

    return Cohort([cnn.build(name, num_classes, stem_stride) for name in networks], num_classes, embed_dim)


def meta(cp, classes: list[str], **extra) -> dict:
    """What `classifier.load` rebuilds a cohort from (`cp`: the CohortParams that made it)."""
    return {"kind": "cohort", "networks": list(cp.networks), "stem_stride": cp.stem_stride,
            "embed_dim": cp.embed_dim, "classes": list(classes), **extra}


def ensemble_probs(logits: Tensor) -> Tensor:
    """(M, N, K) logits -> (N, K): the mean of the networks' softmax, the cohort's prediction."""
    return logits.softmax(-1).mean(0)
