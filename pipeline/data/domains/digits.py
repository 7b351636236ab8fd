"""`digits`: real handwritten digits (scikit-learn's copy of the UCI optical digits, 1,797 images of 8x8
pixels, shipped inside the package: nothing is downloaded), the stand-in for MTIL's MNIST.

Each class's images are split once, by a fixed permutation, into disjoint pools: a quarter for the test
split, a quarter for E0's corpus, the rest for the training split, so no image of a task is ever seen by E0.
A split asking for more images than its pool holds draws them again with a random shift of up to 2 pixels
(train and corpus only: the test split is capped at its pool, never repeated)."""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..streams import stream_rng
from .base import Domain, register

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@functools.lru_cache(maxsize=1)
def _pools() -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    from sklearn.datasets import load_digits  # lazy: only prepare needs it

    images, labels = load_digits(return_X_y=True)
    images = (images.reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.float32)
    rng = stream_rng(0, "digits", "pools")  # fixed: the pools never change with data.seed
    pools: dict[str, list[np.ndarray]] = {"test": [], "corpus": [], "train": []}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        q = len(idx) // 4
        pools["test"].append(idx[:q])
        pools["corpus"].append(idx[q : 2 * q])
        pools["train"].append(idx[2 * q :])
    return images, pools


def available(part: str) -> list[int]:
    """Images per class in the pool of `part`."""
    return [len(p) for p in _pools()[1][part]]


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    images, pools = _pools()
    chosen, labels, repeated = [], [], []
    for c, n in enumerate(counts):
        pool = rng.permutation(pools[part][c])
        n = min(int(n), len(pool)) if part == "test" else int(n)
        take = np.resize(pool, n)  # cycles through the pool when n exceeds it
        chosen.append(take)
        labels.append(np.full(n, c))
        repeated.append(np.arange(n) >= len(pool))
    order = rng.permutation(sum(len(t) for t in chosen))
    idx, labels, repeated = (np.concatenate(a)[order] for a in (chosen, labels, repeated))
    x = torch.from_numpy(images[idx])[:, None]
    pad = size // 8  # a one-cell margin, as MNIST's digits sit inside a border
    x = F.interpolate(x, size=(size - 2 * pad, size - 2 * pad), mode="bilinear", align_corners=False)
    x = F.pad(x, (pad, pad, pad, pad)).squeeze(1).numpy()
    for k in np.flatnonzero(repeated):  # a repeated image is shifted so it is not a copy
        x[k] = np.roll(x[k], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    out = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    return np.repeat(out[:, None], 3, axis=1), labels.astype(np.int64)


register(Domain(
    name="digits",
    classes=tuple(str(d) for d in range(10)),
    templates=('a photo of the number: "{}".',),
    sample=sample,
    descriptions=tuple((w, f"digit {w}", f"number {w}") for w in NAMES),
    generic=("a handwritten digit.", "a scanned number.", "handwriting on a black background."),
    caption_forms=("a handwritten {}.", "a scan of {}.", "{} written by hand.", "{}."),
    corpus_share=0.14, name_rate=0.3, desc_rate=0.4,
))
