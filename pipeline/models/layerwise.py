"""The modules layer-wise MCL trains beside a cohort (TPAMI 2023; the authors' models/aggregator.py and
models/meta_network.py): per network an aggregator of its stage classifiers, and the meta-network of the
matching weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.losses.contrastive import stage_pairs


class Aggregator(nn.Module):
    """One network's ensemble of its stage classifiers: an MLP (S d -> d -> S) on the concatenated pooled stage
    features gives each image softmax weights over the S stages; the aggregate logits are the weighted sum of
    the stage logits."""

    def __init__(self, width: int, stages: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(stages * width, width), nn.ReLU(inplace=True), nn.Linear(width, stages))

    def forward(self, features: list[Tensor], logits: list[Tensor]) -> Tensor:
        weights = self.mlp(torch.cat(features, dim=1)).softmax(dim=1)  # (B, S)
        return sum(z * weights[:, k, None] for k, z in enumerate(logits))


class MatchingWeights(nn.Module):
    """The meta-network: a linear map per (network, stage) to `dim`; the weight of an image for the pair of
    stages (a, k, b, z) is sigmoid(cos(P_ak f_ak, P_bz f_bz)), in `stage_pairs` order."""

    def __init__(self, widths: list[list[int]], dim: int = 128):
        super().__init__()
        self.proj = nn.ModuleList(nn.ModuleList(nn.Linear(w, dim) for w in net) for net in widths)
        self.pairs = stage_pairs([len(net) for net in widths])

    def forward(self, features: list[list[Tensor]]) -> list[Tensor]:
        projected = [[F.normalize(p(f), dim=1) for p, f in zip(ps, fs)] for ps, fs in zip(self.proj, features)]
        return [(projected[a][k] * projected[b][z]).sum(1).sigmoid() for a, k, b, z in self.pairs]
