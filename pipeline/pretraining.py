"""Contrastive pretraining of E0 on an image-caption corpus (CLIP's objective), a method of the project's one
trainer (pipeline/training.py): the `pretrain` recipe's optimiser and schedule, seeded batches of the corpus."""
from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pipeline import optim, runtime
from pipeline.params import PretrainParams
from pipeline.data import CaptionCorpus, loader
from pipeline.losses import clip_contrastive
from pipeline.models import clip as clip_lib
from pipeline.training import Batch, Method, Trainer

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100


class Contrastive(Method):
    """CLIP's symmetric InfoNCE over a batch of image-caption pairs (`contrastive`); the learned logit scale
    trains with the towers and is clamped at 100 after every step, as CLIP does."""

    name = "contrastive"

    def __init__(self, clip: clip_lib.Clip, tokens: torch.Tensor, device: torch.device, precision: str = "fp32",
                 ema: float | None = None):
        self.clip, self.tokens, self.device, self.precision = clip, tokens, device, precision
        self.ema, self.average = ema, None  # `pretrain.ema`: E0 becomes the moving average of the weights

    def weights(self) -> dict[str, float]:
        return {"contrastive": 1.0}

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.clip.model.parameters())

    def train_mode(self) -> None:
        self.clip.model.to(self.device).train()

    def eval_mode(self) -> None:
        self.clip.model.eval()

    def autocast(self):
        return runtime.autocast(self.device, self.precision)

    def terms(self, batch: Batch) -> dict[str, torch.Tensor]:
        model = self.clip.model
        image = clip_lib.encode_images(self.clip, batch.images)
        text = torch.nn.functional.normalize(model.encode_text(runtime.to_device(self.tokens[batch.indices], self.device)), dim=-1)
        return {"contrastive": clip_contrastive(image, text, model.logit_scale)}

    def start(self, optimizer: torch.optim.Optimizer, steps: int) -> None:
        if self.ema is not None:  # torch's EMA (parameters and buffers); its first update copies the weights
            self.average = AveragedModel(self.clip.model, multi_avg_fn=get_ema_multi_avg_fn(self.ema), use_buffers=True)

    def after_step(self) -> None:
        with torch.no_grad():
            self.clip.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if self.average is not None:
            self.average.update_parameters(self.clip.model)

    def finish(self) -> None:
        if self.average is not None:  # E0 is the average, not the last step's weights
            self.clip.model.load_state_dict(self.average.module.state_dict())

    def curves(self) -> dict[str, float]:
        return {"logit_scale": self.clip.model.logit_scale.exp().item()}


def caption_tokens(clip: clip_lib.Clip, captions: list[str]) -> torch.Tensor:
    """Every caption's tokens, (N, context). Each distinct caption is tokenised once (721 of the default's
    20,000): the tokenizer is slow Python."""
    distinct = sorted(set(captions))
    row = {caption: i for i, caption in enumerate(distinct)}
    return clip.tokenizer(distinct)[torch.tensor([row[c] for c in captions])]


def batch_of(device: torch.device, item: tuple[torch.Tensor, torch.Tensor]) -> Batch:
    indices, images = item
    return Batch(runtime.to_device(images, device), None, indices)


def pretrain(clip: clip_lib.Clip, corpus: CaptionCorpus, cfg: PretrainParams, device: torch.device, live=None,
             precision: str = "fp32") -> float:
    """Train `clip` in place; returns the final loss. Forward passes and the loss run under `precision`'s
    autocast (runtime.autocast: none at all in fp32), backward and the optimiser step outside it."""
    method = Contrastive(clip, caption_tokens(clip, corpus.captions), device, precision, cfg.ema)
    order = list(optim.batches(len(corpus.captions), cfg.batch_size, cfg.steps, cfg.seed))
    items = zip(order, loader.batches(corpus.images, order))
    trainer = Trainer.build(method, cfg, cfg.steps, items, partial(batch_of, device))
    return trainer.fit(live, desc="pretrain E0")["contrastive"]
