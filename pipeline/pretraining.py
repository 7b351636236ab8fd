"""Contrastive pretraining of E0 on an image-caption corpus (CLIP's objective)."""
from __future__ import annotations

import math

import torch
from tqdm import tqdm

from pipeline import optim, runtime
from pipeline.config import PretrainParams
from pipeline.data import CaptionCorpus, loader
from pipeline.losses import clip_contrastive
from pipeline.models import clip as clip_lib

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the learned temperature at 100


def pretrain(clip: clip_lib.Clip, corpus: CaptionCorpus, cfg: PretrainParams, device: torch.device, live=None,
             precision: str = "fp32") -> float:
    """Train `clip` in place; returns the final loss. Forward passes and the loss run under `precision`'s
    autocast (runtime.autocast: none at all in fp32), backward and the optimiser step outside it."""
    model = clip.model.to(device).train()
    optimizer, schedule = optim.from_recipe(model.parameters(), cfg, cfg.steps)
    # Tokenise once, each distinct caption once (721 of the default's 20,000): the tokenizer is slow Python.
    distinct = sorted(set(corpus.captions))
    row = {caption: i for i, caption in enumerate(distinct)}
    tokens = clip.tokenizer(distinct)[torch.tensor([row[c] for c in corpus.captions])]
    loss = torch.tensor(float("nan"))
    order = list(optim.batches(len(corpus.captions), cfg.batch_size, cfg.steps, cfg.seed))
    bar = tqdm(zip(order, loader.batches(corpus.images, order)), total=cfg.steps, desc="pretrain E0")
    for step, (idx, images) in enumerate(bar):
        with runtime.autocast(device, precision):
            image = clip_lib.encode_images(clip, runtime.to_device(images, device))
            text = torch.nn.functional.normalize(model.encode_text(runtime.to_device(tokens[idx], device)), dim=-1)
            loss = clip_contrastive(image, text, model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if live is not None:
                live.step = step  # log every 10th step, against the real step number
                live.log_metric("loss/contrastive", loss.item())
                live.log_metric("logit_scale", model.logit_scale.exp().item())
                live.next_step()
    model.eval()
    return loss.item()
