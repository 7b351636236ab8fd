"""Seeded test tensors shared by the loss and model tests (float64 by default: gradient checks need it)."""
from __future__ import annotations

import torch

f64 = torch.float64


def randn(*shape, seed=0, dtype=f64, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(requires_grad)
