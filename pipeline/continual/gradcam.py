"""Grad-CAM inputs from an open_clip image tower: the last feature map A, kept in the autograd graph, and the
gradient of a class score with respect to it (LwM, docs/methods/lwm.md, "L_AD").

The map is captured with a hook during the model's own forward pass, so the features are exactly those of
`clip_lib.encode_images` and nothing of open_clip's forward is re-implemented:
- ModifiedResNet (open_clip's CLIP ResNet): A = output of `layer<stage>`, (B, K, H, W); stage 4 (the last, the
  input of `attnpool`) is the spec's map, `loss.lwm_stage` picks an earlier one where that map is 1x1.
- VisionTransformer: A = the patch tokens entering the last residual block, on their (gh, gw) grid, (B, K, gh,
  gw) with K the width; the class token is dropped. Not the last block's *output*: with class-token pooling
  (open_clip's default) the image feature is the class token leaving the last block, which does not depend on
  the patch tokens leaving it, so dy/dA would be identically 0 there. The class token last reads the patch
  tokens in the last block's attention, whose input this map is (pytorch-grad-cam takes ViT maps there too,
  at `blocks[-1].norm1`).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from pipeline.losses import grad_cam
from pipeline.models import clip as clip_lib


def feature_map_and_features(
    clip: clip_lib.Clip, images: Tensor, leaf: bool = False, stage: int = 4
) -> tuple[Tensor, Tensor]:
    """Run the image tower once; return (A, image features).

    Args:
        clip: the model (student or frozen teacher).
        images: (B, 3, H, W) uint8 images.
        leaf: detach A and make it a leaf that requires grad. For a frozen teacher, whose A would otherwise not
            require grad: dy/dA can then be taken without any graph through the teacher's parameters.
    Returns:
        A: (B, K, h, w) feature map, in the graph of the features (dy/dA is defined).
        features: (B, d) image features, unnormalised (as `model.encode_image`).
    """
    # Imported here: open_clip is slow to import, and importing pipeline.continual (which the config does to
    # check method names) must stay cheap.
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    visual = clip.model.visual
    captured: dict[str, Tensor] = {}
    if isinstance(visual, ModifiedResNet):

        def resnet_hook(module, args, output):
            a = output.detach().requires_grad_(True) if leaf else output
            captured["A"] = a
            return a  # the forward continues from A itself, so A is an ancestor of the features

        handle = getattr(visual, f"layer{stage}").register_forward_hook(resnet_hook)
    elif isinstance(visual, VisionTransformer):
        gh, gw = visual.grid_size
        batch_first = getattr(visual.transformer, "batch_first", True)

        def vit_hook(module, args, kwargs):
            x = args[0] if batch_first else args[0].transpose(0, 1)  # (B, 1 + gh * gw, K)
            if x.shape[1] != 1 + gh * gw:
                raise ValueError(f"expected 1 + {gh}x{gw} tokens, got {x.shape[1]} (patch dropout must be off)")
            cls_token, tokens = x[:, :1], x[:, 1:]
            a = tokens.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2)  # (B, K, gh, gw), row-major grid
            if leaf:
                a, cls_token = a.detach().requires_grad_(True), cls_token.detach()
            captured["A"] = a
            # Rebuild the block's input from A (numerically the same tokens) so that A is in the graph.
            x = torch.cat([cls_token, a.permute(0, 2, 3, 1).reshape(x.shape[0], gh * gw, -1)], dim=1)
            return (x if batch_first else x.transpose(0, 1), *args[1:]), kwargs

        handle = visual.transformer.resblocks[-1].register_forward_pre_hook(vit_hook, with_kwargs=True)
    else:
        kind = type(visual).__name__
        raise TypeError(f"Grad-CAM needs an open_clip ModifiedResNet or VisionTransformer image tower, got {kind}")
    try:
        # Grad-CAM needs dy/dA even where the caller runs under no_grad. The math attention kernel: the fused
        # (flash / memory-efficient) kernels have no double backward, which the student's create_graph needs;
        # the teacher uses it too, so that student == teacher gives bit-equal maps.
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            features = clip.model.encode_image(clip_lib.image_input(clip, images))
    finally:
        handle.remove()
    return captured["A"], features


def class_grad_cam(feature_map: Tensor, class_scores: Tensor, create_graph: bool) -> Tensor:
    """Q_hat (B, h * w) of ``grad_cam`` for the per-sample class scores y_b (B,).

    One backward of sum_i y_{i, b_i} gives every sample's own dy_b/dA: the layers after A (attention pool,
    last ViT block, projection) act on each sample separately, so no sample's score depends on another's A.
    `create_graph=True` (the student) keeps dy/dA differentiable so that L_AD trains the student.
    """
    (gradients,) = torch.autograd.grad(class_scores.sum(), feature_map, create_graph=create_graph)
    return grad_cam(feature_map, gradients)
