"""`shapes`: one large geometric shape on a cluttered background; few classes, the easy task (MTIL's Pets /
Caltech101: CLIP is good at it zero-shot)."""
from __future__ import annotations

import numpy as np

from .base import Domain, finish, grid, paint, register, rotate, shuffled_labels, smooth_noise

CLASSES = ("circle", "triangle", "square", "star", "crescent")


def _mask(label: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r = np.sqrt(x * x + y * y)
    if label == 0:
        return r <= 1.0
    if label == 1:
        return (y <= 0.75) & (np.abs(x) <= (y + 1.0) * 0.6)
    if label == 2:
        return np.maximum(np.abs(x), np.abs(y)) <= 0.8
    if label == 3:
        ang = np.arctan2(x, -y) * (5 / (2 * np.pi))
        return r <= 1.0 - 0.55 * np.abs(ang - np.round(ang)) * 2
    return (r <= 1.0) & ((x - 0.45) ** 2 + (y + 0.1) ** 2 > 0.75**2)  # crescent: a disc less an offset disc


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    labels = shuffled_labels(counts, rng)
    gx, gy = grid(size)
    canvases = []
    for label in labels:
        bg = rng.uniform(40, 200, 3).astype(np.float32)
        canvas = np.broadcast_to(bg, (size, size, 3)).copy()
        clutter = smooth_noise(size, 4, rng)[..., None]
        canvas += (clutter - 0.5) * rng.uniform(20, 60)
        scale = rng.uniform(0.45, 0.75)
        cx, cy = rng.uniform(-0.2, 0.2, 2)
        x, y = rotate((gx - cx) / scale, (gy - cy) / scale, rng.uniform(-0.4, 0.4))
        colour = (bg + rng.choice([-1, 1], 3) * rng.uniform(70, 130, 3)) % 256
        paint(canvas, _mask(int(label), x, y), colour)
        canvases.append(canvas)
    return finish(canvases, rng, size), labels


register(Domain(
    name="shapes",
    classes=CLASSES,
    templates=("a photo of a {}.", "a drawing of a {}.", "a {} shape."),
    sample=sample,
    descriptions=(("round disc", "ring-shaped blob", "round shape"), ("three-cornered shape", "pyramid outline"),
                  ("box", "four-sided shape", "block"), ("five-pointed shape", "spiky shape"),
                  ("moon shape", "sickle shape", "curved sliver")),
    generic=("a shape.", "a simple drawing.", "a picture of a shape on a background."),
    caption_forms=("a photo of a {}.", "a {} on a plain background.", "clip art of a {}.", "{}."),
    corpus_share=0.22, name_rate=0.4, desc_rate=0.2,
))
