"""DeiT-style student with a distillation token (docs/methods/token.md, steps 2-5 and 7).

Touvron et al., "Training data-efficient image transformers & distillation through attention" (ICML 2021),
extended as in the patent with global + sliding-window attention, feature-wise transformation layers
(Tseng et al., ICLR 2020) and a locally-enhanced feed-forward (LocalViT / CeiT). Blocks: student_blocks.py.

``forward(x)`` returns ``(z_cls, z_dist)`` in training and in eval (the losses need both; unlike DeiT's
code, which averages them in eval). Inference fuses them with ``fuse`` (mean of the two softmaxes, step 7).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models.student_blocks import (
    WINDOW_KINDS,
    EncoderBlock,
    FeatureWiseTransform,
    attention_mask,
    ft_disabled,
)

__all__ = ["StudentConfig", "DistillationStudent", "fuse", "parameter_count", "ft_disabled", "patchify"]


@dataclass(frozen=True)
class StudentConfig:
    """Sizes and switches of the student; every switch of spec step 4 is a field.

    ``attn_window``: None = full attention, else the window radius in patches ("2d": Chebyshev
    neighbourhood on the grid, "1d": raster order). ``ft_init_gamma`` / ``ft_init_beta``: initial
    softplus(theta) (Tseng: 0.3 / 0.5). ``leff_depth``: depthwise convs in the LeFF stack (patent: 32).
    """

    image_size: int
    patch_size: int
    num_classes: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    in_chans: int = 3
    emb_dropout: float = 0.0
    attn_window: int | None = None
    window_kind: str = "2d"
    ft_layers: bool = False
    ft_init_gamma: float = 0.3
    ft_init_beta: float = 0.5
    leff: bool = False
    leff_depth: int = 1
    leff_kernel: int = 3
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "num_classes", "d_model", "n_layers", "n_heads", "d_ff",
                     "in_chans", "leff_depth", "leff_kernel"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.window_kind not in WINDOW_KINDS:
            raise ValueError(f"window_kind must be one of {WINDOW_KINDS}, got {self.window_kind!r}")
        if self.attn_window is not None and self.attn_window < 0:
            raise ValueError(f"attn_window must be >= 0 or None, got {self.attn_window}")
        if self.leff_kernel % 2 == 0:
            raise ValueError(f"leff_kernel must be odd (padding k // 2 keeps the grid), got {self.leff_kernel}")
        for name in ("emb_dropout", "dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C * p * p): non-overlapping p x p patches in raster order, each flattened
    channel-major (C, p, p), as spec step 2 (equivalent to a stride-p convolution after the Linear)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


class DistillationStudent(nn.Module):
    """Patch embedding, [cls, patches, dist] tokens + learned positions, encoder blocks, two linear heads."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        c = config
        d = c.d_model
        self.patch_embed = nn.Linear(c.in_chans * c.patch_size**2, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, c.num_patches + 2, d))
        self.emb_drop = nn.Dropout(c.emb_dropout)
        # Built once; non-persistent: it is derived from the config, so it is not part of a checkpoint.
        self.register_buffer("attn_mask", attention_mask(c.grid, c.attn_window, c.window_kind), persistent=False)
        self.blocks = nn.ModuleList(
            EncoderBlock(d, c.n_heads, c.d_ff, c.grid, dropout=c.dropout, ft_layers=c.ft_layers,
                         ft_init_gamma=c.ft_init_gamma, ft_init_beta=c.ft_init_beta, leff=c.leff,
                         leff_depth=c.leff_depth, leff_kernel=c.leff_kernel)
            for _ in range(c.n_layers)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, c.num_classes)
        self.head_dist = nn.Linear(d, c.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # DeiT / timm VisionTransformer: trunc_normal(std .02) for tokens, positions and Linear weights,
        # zero biases; LayerNorm keeps (1, 0); depthwise convs keep PyTorch's default init.
        for p in (self.cls_token, self.dist_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> embedded sequence (B, N + 2, d) before the blocks (steps 2-3)."""
        c = self.config
        if images.ndim != 4 or images.shape[1] != c.in_chans or tuple(images.shape[2:]) != (c.image_size,) * 2:
            raise ValueError(
                f"expected images of shape (B, {c.in_chans}, {c.image_size}, {c.image_size}) for "
                f"image_size={c.image_size}, patch_size={c.patch_size}; got {tuple(images.shape)}"
            )
        if torch.is_grad_enabled():
            x = self.patch_embed(patchify(images, c.patch_size))
        else:  # inference: the same Linear as a stride-p convolution, without materialising the patches
            weight = self.patch_embed.weight.view(-1, c.in_chans, c.patch_size, c.patch_size)
            x = F.conv2d(images, weight, self.patch_embed.bias, stride=c.patch_size).flatten(2).transpose(1, 2)
        b = x.shape[0]
        x = torch.cat([self.cls_token.expand(b, -1, -1), x, self.dist_token.expand(b, -1, -1)], dim=1)
        return self.emb_drop(x + self.pos_embed)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (z_cls, z_dist): (B, num_classes) logits of the class and the distillation head."""
        x = self.tokens(images)
        for block in self.blocks[:-1]:
            x = block(x, self.attn_mask)
        # The heads read only the two special tokens: the last block computes just their rows (exact).
        x = self.norm(self.blocks[-1].forward_special(x, self.attn_mask))
        return self.head(x[:, 0]), self.head_dist(x[:, -1])

    @torch.no_grad()
    def fused_probs(self, images: Tensor) -> Tensor:
        """Inference (step 7): (B, num_classes) probabilities, mean of the two heads' softmaxes."""
        return fuse(*self(images))

    def ft_parameters(self) -> list[nn.Parameter]:
        """theta_gamma, theta_beta of every FT layer (empty when ``ft_layers`` is False)."""
        return [p for m in self.modules() if isinstance(m, FeatureWiseTransform) for p in m.parameters()]

    def model_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the FT thetas: what the model optimizer updates."""
        ft = {id(p) for p in self.ft_parameters()}
        return [p for p in self.parameters() if id(p) not in ft]


def fuse(z_cls: Tensor, z_dist: Tensor) -> Tensor:
    """Mean of the two heads' softmaxes, (B, K) probabilities (spec step 7). DeiT's code averages the
    logits instead; the spec asks for probabilities."""
    return (F.softmax(z_cls, dim=-1) + F.softmax(z_dist, dim=-1)) / 2


def parameter_count(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
