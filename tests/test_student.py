"""Tests of pipeline.models.student(_blocks): attention mask, FT layers, LeFF, the whole distillation student
(docs/methods/token.md). Micro sizes: every test runs in well under a second."""
from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
from torch import nn

from pipeline.losses import student_ce
from pipeline.models.student import DistillationStudent, StudentConfig, fuse, parameter_count, patchify
from pipeline.models.student_blocks import (
    FT_SOFTPLUS_BETA,
    EncoderBlock,
    FeatureWiseTransform,
    LocallyEnhancedFeedForward,
    attention_mask,
    ft_disabled,
)

from tensors import f64, randn

D = 8  # d_model of the block-level tests


def config(**kw) -> StudentConfig:
    base = dict(image_size=8, patch_size=2, num_classes=5, d_model=16, n_layers=2, n_heads=2, d_ff=32)
    return StudentConfig(**{**base, **kw})


def block_on(grid, window, kind="2d", seed=0, **kw):
    """A float64 eval-mode block and its mask, so outputs compare exactly."""
    torch.manual_seed(seed)
    block = EncoderBlock(D, 2, 16, grid, **kw).to(f64).eval()
    return block, attention_mask(grid, window, kind)


def perturbed(x, position, seed=1):
    y = x.clone()
    y[:, position] += randn(x.shape[0], x.shape[2], seed=seed)
    return y


# ---------------------------------------------------------------- attention mask
def test_mask_values_3x3_grid_window_1_2d():
    # Grid indices  0 1 2 / 3 4 5 / 6 7 8 ; 2-D window 1 = the 8-neighbourhood (Chebyshev distance <= 1).
    neighbours = {0: {0, 1, 3, 4}, 1: {0, 1, 2, 3, 4, 5}, 2: {1, 2, 4, 5}, 3: {0, 1, 3, 4, 6, 7},
                  4: set(range(9)), 5: {1, 2, 4, 5, 7, 8}, 6: {3, 4, 6, 7}, 7: {3, 4, 5, 6, 7, 8}, 8: {4, 5, 7, 8}}
    expected = torch.ones(11, 11, dtype=torch.bool)
    for i in range(9):
        for j in range(9):
            expected[1 + i, 1 + j] = j in neighbours[i]
    assert torch.equal(attention_mask((3, 3), 1, "2d"), expected)


def test_mask_values_3x3_grid_window_1_1d():
    # Raster order: 2 and 3 are neighbours in 1-D (end of row 0, start of row 1), not on the grid.
    patch = torch.tensor([[abs(i - j) <= 1 for j in range(9)] for i in range(9)])
    mask = attention_mask((3, 3), 1, "1d")
    assert torch.equal(mask[1:10, 1:10], patch)
    assert mask[0].all() and mask[10].all() and mask[:, 0].all() and mask[:, 10].all()
    assert mask[1 + 2, 1 + 3] and not attention_mask((3, 3), 1, "2d")[1 + 2, 1 + 3]


def test_mask_none_is_full_and_bad_values_rejected():
    assert attention_mask((3, 2), None).all() and attention_mask((3, 2), None).shape == (8, 8)
    with pytest.raises(ValueError, match="window_kind"):
        attention_mask((3, 3), 1, "3d")
    with pytest.raises(ValueError, match="attn_window"):
        attention_mask((3, 3), -1)


# 4 x 4 grid: idx = 4 * row + col. Each case: a query patch, a patch outside its window, one inside.
# 2d: 3=(0,3) and 4=(1,0) are raster neighbours but 3 apart on the grid; 7=(1,3) is below 3.
# 1d: 9=(2,1) is right below 5=(1,1) on the grid but 4 apart in raster order; 6 is next to 5.
@pytest.mark.parametrize("kind, query, outside, inside", [("2d", 3, 4, 7), ("1d", 5, 9, 6)])
def test_block_output_ignores_patches_outside_the_window(kind, query, outside, inside):
    block, mask = block_on((4, 4), 1, kind)
    x = randn(2, 18, D)
    out = block(x, mask)
    assert torch.equal(block(perturbed(x, 1 + outside), mask)[:, 1 + query], out[:, 1 + query])
    assert not torch.allclose(block(perturbed(x, 1 + inside), mask)[:, 1 + query], out[:, 1 + query])


def test_special_tokens_see_every_patch_and_every_patch_sees_them():
    block, mask = block_on((4, 4), 1)
    x = randn(2, 18, D)
    out = block(x, mask)
    for j in range(16):
        moved = block(perturbed(x, 1 + j, seed=j + 1), mask)
        for special in (0, 17):
            assert not torch.allclose(moved[:, special], out[:, special]), (j, special)
    for special in (0, 17):
        moved = block(perturbed(x, special), mask)
        assert all(not torch.allclose(moved[:, 1 + i], out[:, 1 + i]) for i in range(16))


def test_full_attention_every_output_depends_on_every_patch():
    block, mask = block_on((3, 3), None)
    x = randn(2, 11, D)
    out = block(x, mask)
    for j in range(9):
        moved = block(perturbed(x, 1 + j), mask)
        assert all(not torch.allclose(moved[:, t], out[:, t]) for t in range(11)), j


# ---------------------------------------------------------------- feature-wise transformation
def test_ft_identity_in_eval_and_when_disabled():
    ft = FeatureWiseTransform(D).to(f64)
    z = randn(3, 5, D)
    assert torch.equal(ft.eval()(z), z)
    ft.train()
    assert not torch.allclose(ft(z), z)
    with ft_disabled(ft):
        assert torch.equal(ft(z), z)
    assert ft.active  # restored


def test_ft_random_per_pass_and_shared_across_batch_and_tokens():
    ft = FeatureWiseTransform(D).to(f64).train()
    # Samples 0 and 1 are all zeros and all ones: out[0] = beta, out[1] - out[0] = gamma, per channel.
    z = torch.cat([torch.zeros(1, 4, D, dtype=f64), torch.ones(1, 4, D, dtype=f64), randn(2, 4, D)])
    out = ft(z)
    beta, gamma = out[0], out[1] - out[0]
    assert torch.equal(beta, beta[:1].expand_as(beta)) and torch.allclose(gamma, gamma[:1].expand_as(gamma))
    assert torch.allclose(out[2:], gamma * z[2:] + beta)  # the same (gamma, beta) for every sample
    assert not torch.allclose(ft(z), out)  # a fresh draw each forward


def test_ft_init_and_parameter_split():
    ft = FeatureWiseTransform(D, init_gamma=0.3, init_beta=0.5)
    assert torch.allclose(F.softplus(ft.theta_gamma, beta=FT_SOFTPLUS_BETA), torch.full((D,), 0.3))
    assert torch.allclose(F.softplus(ft.theta_beta, beta=FT_SOFTPLUS_BETA), torch.full((D,), 0.5))
    model = DistillationStudent(config(ft_layers=True))
    ft_ids = {id(p) for p in model.ft_parameters()}
    assert len(ft_ids) == 2 * model.config.n_layers
    assert ft_ids.isdisjoint(id(p) for p in model.model_parameters())
    assert len(ft_ids) + len(model.model_parameters()) == len(list(model.parameters()))
    plain = DistillationStudent(config(ft_layers=False))
    assert plain.ft_parameters() == [] and all(b.ft is None for b in plain.blocks)
    assert not any("theta" in n for n, _ in plain.named_parameters())


def test_model_with_ft_random_in_training_deterministic_in_eval():
    model = DistillationStudent(config(ft_layers=True)).to(f64)
    x = randn(3, 3, 8, 8)
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])
    with ft_disabled(model):
        assert torch.equal(model(x)[0], model(x)[0])
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# ---------------------------------------------------------------- LeFF
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_leff_passes_special_tokens_bit_identically(dropout):
    torch.manual_seed(0)
    leff = LocallyEnhancedFeedForward(D, 16, (3, 4), depth=2, kernel=3, dropout=dropout).train()
    x = torch.randn(2, 14, D)
    out = leff(x)
    assert out.shape == x.shape
    assert torch.equal(out[:, 0], x[:, 0]) and torch.equal(out[:, 13], x[:, 13])
    assert not torch.allclose(out[:, 1:13], x[:, 1:13])
    with pytest.raises(ValueError, match="tokens"):
        leff(x[:, :10])


def test_leff_is_local_on_the_grid():
    # depth 1, kernel 3: patch (0,0) (idx 0) sees only its 3x3 neighbourhood on a 4x4 grid.
    torch.manual_seed(0)
    leff = LocallyEnhancedFeedForward(D, 16, (4, 4), depth=1, kernel=3).to(f64)
    x = randn(1, 18, D)
    out = leff(x)
    assert torch.equal(leff(perturbed(x, 1 + 2))[:, 1], out[:, 1])  # (0,2): two columns away
    assert not torch.allclose(leff(perturbed(x, 1 + 5))[:, 1], out[:, 1])  # (1,1): diagonal neighbour


# ---------------------------------------------------------------- whole model
def test_patchify_matches_a_stride_p_convolution():
    model = DistillationStudent(config())
    x = torch.randn(2, 3, 8, 8)
    w = model.patch_embed.weight.reshape(16, 3, 2, 2)  # Linear over (C, p, p)-flattened patches
    conv = F.conv2d(x, w, model.patch_embed.bias, stride=2).flatten(2).transpose(1, 2)  # raster order
    assert patchify(x, 2).shape == (2, 16, 12)
    assert torch.allclose(model.patch_embed(patchify(x, 2)), conv, atol=1e-6)


@pytest.mark.parametrize("kw", [{}, dict(attn_window=1, window_kind="1d", ft_layers=True, leff=True, leff_depth=2)])
def test_output_shapes_and_fused_probabilities(kw):
    model = DistillationStudent(config(**kw))
    x = torch.randn(4, 3, 8, 8)
    for mode in (model.train, model.eval):
        mode()
        z_cls, z_dist = model(x)
        assert z_cls.shape == z_dist.shape == (4, 5)
    probs = model.fused_probs(x)
    assert torch.allclose(probs, (z_cls.softmax(-1) + z_dist.softmax(-1)) / 2)
    # fused_probs runs under no_grad, where attention and patch embedding take the fused kernels: equal to
    # float rounding, not bitwise.
    assert torch.allclose(probs.sum(-1), torch.ones(4)) and torch.allclose(fuse(z_cls, z_dist), probs, atol=1e-6)
    assert model.tokens(x).shape == (4, 16 + 2, 16)


def test_parameter_count_matches_the_architecture():
    c = config()
    d, dff, k, n, p2c = 16, 32, 5, 16, 3 * 2 * 2
    block = (2 * d) + (3 * d * d + 3 * d) + (d * d + d) + (d * dff + dff) + (dff * d + d) + (2 * d)
    plain = (p2c * d + d) + 2 * d + (n + 2) * d + c.n_layers * block + 2 * d + 2 * (d * k + k)
    assert parameter_count(DistillationStudent(c)) == plain
    rich = DistillationStudent(config(ft_layers=True, leff=True, leff_depth=3, leff_kernel=3))
    assert parameter_count(rich) == plain + c.n_layers * (2 * d + 3 * (dff * 9 + dff))
    rich.head.weight.requires_grad_(False)
    assert parameter_count(rich, trainable_only=True) == parameter_count(rich) - d * k


def test_init_follows_deit():
    model = DistillationStudent(config())
    assert model.cls_token.std() < 0.05 and model.cls_token.abs().max() > 0
    assert all(torch.all(m.bias == 0) for m in model.modules() if isinstance(m, nn.Linear))
    assert model.blocks[0].attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert "attn_mask" not in model.state_dict()  # non-persistent: derived from the config


def test_bad_sizes_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="image_size=9.*patch_size=2"):
        config(image_size=9)
    with pytest.raises(ValueError, match="n_heads"):
        config(n_heads=3)
    with pytest.raises(ValueError, match="leff_kernel"):
        config(leff_kernel=2)
    with pytest.raises(ValueError, match="window_kind"):
        config(window_kind="diag")
    model = DistillationStudent(config())
    with pytest.raises(ValueError, match="image_size=8, patch_size=2"):
        model(torch.randn(1, 3, 10, 10))


# FT noise (gamma ~ 1 +- 0.3, beta ~ 0 +- 0.5 per channel) slows fitting on purpose, hence the looser bound.
@pytest.mark.parametrize("ft_layers, bound", [(False, 0.25), (True, 0.8)])
def test_tiny_student_overfits_a_batch(ft_layers, bound):
    torch.manual_seed(0)
    model = DistillationStudent(config(attn_window=1, ft_layers=ft_layers, leff=True)).train()
    x, y = torch.randn(8, 3, 8, 8), torch.arange(8) % 5
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = student_ce(*model(x), y).item()
    for _ in range(30):
        loss = student_ce(*model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert student_ce(*model(x), y).item() < bound * first


@pytest.mark.parametrize("leff", [True, False])
def test_last_block_computes_only_the_special_rows_exactly(leff):
    """forward_special (the last block of the model) equals the full block's rows 0 and N + 1."""
    from pipeline.models.student_blocks import EncoderBlock, attention_mask

    torch.manual_seed(0)
    block = EncoderBlock(16, 2, 32, (4, 4), ft_layers=True, leff=leff).eval()
    mask, x = attention_mask((4, 4), 1, "2d"), torch.randn(3, 18, 16)
    for grad in (True, False):  # explicit attention with gradient, the fused kernel without
        with torch.set_grad_enabled(grad):
            assert torch.allclose(block.forward_special(x, mask), block(x, mask)[:, [0, -1]], atol=1e-6)


def test_inference_path_matches_training_path():
    """Under no_grad the patch embedding runs as a stride-p convolution and attention through
    scaled_dot_product_attention: the same function as the explicit path, to float rounding."""
    torch.manual_seed(0)
    model = DistillationStudent(config(attn_window=1, leff=True)).eval()
    x = torch.randn(4, 3, 8, 8)
    explicit = model(x)
    with torch.no_grad():
        fused = model(x)
    for a, b in zip(explicit, fused):
        assert torch.allclose(a, b, atol=1e-5)
