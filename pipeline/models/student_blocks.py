"""Encoder block of the distillation-token student (docs/methods/token.md, step 4).

Token layout everywhere: ``[cls, patch_1 .. patch_N, dist]`` (B, N + 2, d), patches in raster (row-major)
order of a (gh, gw) grid. Pieces:

- ``attention_mask``: global + sliding-window boolean mask (Longformer-style; True = may attend).
- ``MaskedSelfAttention``: multi-head self-attention with an explicit softmax. Chosen over
  ``F.scaled_dot_product_attention`` because learning-to-learn differentiates through the backward pass
  (double backward), which the fused CPU/GPU kernels do not all support; it is also deterministic on CPU.
- ``FeatureWiseTransform``: Tseng et al. (ICLR 2020) FT layer, ``z' = gamma * z + beta`` in training only.
- ``Mlp`` / ``LocallyEnhancedFeedForward``: plain FFN, or LocalViT / CeiT LeFF on the patch grid.
- ``EncoderBlock``: ``x = x + attn(LN1(x))`` (pre-norm), then FT, then ``x = LN2(x + ffn(x))`` (the spec's
  "residual + LayerNorm", post-norm). The FFN's norm placement is the same with and without LeFF so that the
  ``leff`` switch changes only the FFN itself.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WINDOW_KINDS = ("2d", "1d")
# Tseng et al.'s code (methods/backbone.py) uses softplus(x, beta=100): ~relu(x) for x > 0, so theta is
# (to ~1e-15) the noise scale itself and receives gradient ~1 there; we keep that sharpness.
FT_SOFTPLUS_BETA = 100.0


def attention_mask(grid: tuple[int, int], window: int | None, kind: str = "2d") -> Tensor:
    """Boolean (N + 2, N + 2) mask, row = query, column = key, True = attend.

    Tokens 0 (cls) and N + 1 (dist) attend to every token and every token attends to them (global part).
    Patch i attends to patch j iff, on the grid, max(|row_i - row_j|, |col_i - col_j|) <= window ("2d",
    Chebyshev neighbourhood) or |i - j| <= window in raster order ("1d"). ``window=None``: full attention.
    """
    if kind not in WINDOW_KINDS:
        raise ValueError(f"window_kind must be one of {WINDOW_KINDS}, got {kind!r}")
    gh, gw = grid
    n = gh * gw
    mask = torch.ones(n + 2, n + 2, dtype=torch.bool)
    if window is None:
        return mask
    if window < 0:
        raise ValueError(f"attn_window must be >= 0 or None, got {window}")
    idx = torch.arange(n)
    if kind == "1d":
        local = (idx[:, None] - idx[None, :]).abs() <= window
    else:
        row, col = idx // gw, idx % gw
        dist = torch.maximum((row[:, None] - row[None, :]).abs(), (col[:, None] - col[None, :]).abs())
        local = dist <= window
    mask[1 : n + 1, 1 : n + 1] = local
    return mask


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention; ``mask`` (T, T) bool, True = attend (every row has a True: the globals)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor, rows: list[int] | None = None) -> Tensor:
        """(B, T, d) -> (B, T, d); with `rows`, only those query positions: (B, len(rows), d)."""
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if rows is not None:
            q, mask = q[:, :, rows], mask[rows]
            t = len(rows)
        if torch.is_grad_enabled():
            # Explicit softmax attention: learning-to-learn differentiates through its backward, which the
            # fused kernels do not support.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.n_heads)  # (B, h, T, T)
            scores = scores.masked_fill(~mask, float("-inf"))
            out = scores.softmax(dim=-1) @ v
        else:  # inference: the fused kernel computes the same attention without the (T, T) intermediates
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, t, d)))


def _inverse_softplus(value: float, beta: float) -> float:
    if value <= 0:
        raise ValueError(f"FT initial scale must be > 0, got {value}")
    x = beta * value
    return (x + math.log(-math.expm1(-x))) / beta  # log(expm1(x)) without overflow for large x


class FeatureWiseTransform(nn.Module):
    """Feature-wise transformation layer (Tseng et al., ICLR 2020, eq. 1-2).

    Training (and ``active``): ``z' = gamma * z + beta`` with ``gamma = 1 + eps1 * softplus(theta_gamma)``,
    ``beta = eps2 * softplus(theta_beta)``, ``eps1, eps2 ~ N(0, 1)`` of shape (d,): one draw per channel per
    forward, shared by all samples and tokens. Eval mode or ``active = False``: the identity.

    theta is initialised so that softplus(theta) = ``init_gamma`` / ``init_beta`` (0.3 / 0.5) with
    softplus sharpness ``FT_SOFTPLUS_BETA`` = 100 as in Tseng's code, so theta itself is also ~0.3 / 0.5.
    """

    def __init__(self, d_model: int, init_gamma: float = 0.3, init_beta: float = 0.5):
        super().__init__()
        self.theta_gamma = nn.Parameter(torch.full((d_model,), _inverse_softplus(init_gamma, FT_SOFTPLUS_BETA)))
        self.theta_beta = nn.Parameter(torch.full((d_model,), _inverse_softplus(init_beta, FT_SOFTPLUS_BETA)))
        self.active = True

    def forward(self, z: Tensor) -> Tensor:
        if not (self.training and self.active):
            return z
        eps1, eps2 = torch.randn(2, z.shape[-1], device=z.device, dtype=z.dtype)
        gamma = 1 + eps1 * F.softplus(self.theta_gamma, beta=FT_SOFTPLUS_BETA)
        beta = eps2 * F.softplus(self.theta_beta, beta=FT_SOFTPLUS_BETA)
        return gamma * z + beta


@contextmanager
def ft_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Switch every FT layer of ``model`` off (identity) inside the block, also in training mode; the
    pseudo-unseen pass of learning-to-learn needs this. Restores each layer's previous flag."""
    layers = [m for m in model.modules() if isinstance(m, FeatureWiseTransform)]
    before = [m.active for m in layers]
    for m in layers:
        m.active = False
    try:
        yield model
    finally:
        for m, flag in zip(layers, before):
            m.active = flag


class Mlp(nn.Module):
    """Plain transformer FFN, Linear-GELU-Linear, applied to every token (special tokens included)."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class LocallyEnhancedFeedForward(nn.Module):
    """LeFF (LocalViT, Li et al. 2021; CeiT, Yuan et al. 2021), the patent's "second training".

    Patch tokens: Linear(d -> d_ff) -> GELU -> (B, d_ff, gh, gw) -> ``depth`` x [depthwise Conv2d(k) -> GELU]
    -> (B, N, d_ff) -> Linear(d_ff -> d). The cls and dist tokens are re-attached unchanged (bit-identical
    copies of the input): they bypass the FFN. No BatchNorm in the conv stack (kept simple).
    Note: the convs mix neighbouring patches, so with LeFF a block's receptive field is the attention window
    plus ``depth * (k // 2)`` patches.
    """

    def __init__(self, d_model: int, d_ff: int, grid: tuple[int, int], depth: int = 1, kernel: int = 3,
                 dropout: float = 0.0):
        super().__init__()
        self.grid = grid
        self.fc1 = nn.Linear(d_model, d_ff)
        self.convs = nn.ModuleList(
            nn.Conv2d(d_ff, d_ff, kernel, padding=kernel // 2, groups=d_ff) for _ in range(depth)
        )
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        gh, gw = self.grid
        if t != gh * gw + 2:
            raise ValueError(f"LeFF expects {gh * gw + 2} tokens (grid {gh}x{gw} + 2), got {t}")
        # fc1 on every token, then the patch rows viewed as a channels-last grid: no copies on the way in or
        # out of the convolutions (the two extra rows cost 2 / (N + 2) of fc1).
        h = F.gelu(self.fc1(x))[:, 1:-1]  # (B, N, d_ff)
        h = h.unflatten(1, (gh, gw)).permute(0, 3, 1, 2)  # (B, d_ff, gh, gw), channels-last strides
        for conv in self.convs:
            h = F.gelu(conv(h))
        h = self.drop(self.fc2(self.drop(h.permute(0, 2, 3, 1).reshape(b, gh * gw, -1))))
        return torch.cat([x[:, :1], h, x[:, -1:]], dim=1)


class EncoderBlock(nn.Module):
    """One "transformer + meta-transformer" block: masked attention, FT layer (optional), FFN or LeFF.

    Special tokens under LeFF: the FFN returns them unchanged, so the post-norm gives them LN(x + x) = LN(x)
    (LayerNorm is scale-invariant up to eps), i.e. they are only normalised, as in CeiT.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, grid: tuple[int, int], *, dropout: float = 0.0,
                 ft_layers: bool = False, ft_init_gamma: float = 0.3, ft_init_beta: float = 0.5,
                 leff: bool = False, leff_depth: int = 1, leff_kernel: int = 3):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = MaskedSelfAttention(d_model, n_heads, dropout)
        self.ft = FeatureWiseTransform(d_model, ft_init_gamma, ft_init_beta) if ft_layers else None
        self.ffn = (
            LocallyEnhancedFeedForward(d_model, d_ff, grid, leff_depth, leff_kernel, dropout)
            if leff
            else Mlp(d_model, d_ff, dropout)
        )
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), mask)
        if self.ft is not None:
            x = self.ft(x)
        return self.norm2(x + self.ffn(x))

    def forward_special(self, x: Tensor, mask: Tensor) -> Tensor:
        """`forward(x, mask)[:, [0, -1]]`, computing only the two special tokens' rows (B, 2, d).

        The heads read nothing else of the last block, and nothing else is needed for these rows: their
        queries attend to every key, the FT layer is per channel, and the feed-forward acts on each token
        alone (LeFF passes the special tokens through; its convolutions only mix patch tokens)."""
        rows = [0, x.shape[1] - 1]
        h = x[:, rows] + self.attn(self.norm1(x), mask, rows)
        if self.ft is not None:
            h = self.ft(h)
        ffn = h if isinstance(self.ffn, LocallyEnhancedFeedForward) else self.ffn(h)
        return self.norm2(h + ffn)
