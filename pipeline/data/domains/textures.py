"""`textures`: procedural surface patterns in two random colours, at a random scale and orientation, the
stand-in for MTIL's DTD (Describable Textures)."""
from __future__ import annotations

import numpy as np

from .base import Domain, finish, grid, paint, register, rotate, shuffled_labels, smooth_noise

CLASSES = ("striped", "dotted", "checkered", "zigzagged", "grid", "wavy", "spiralled", "crosshatched",
           "blotchy", "bubbly", "marbled", "honeycombed")


def _line(wave: np.ndarray, f: float, size: int) -> np.ndarray:
    """Pixels within 0.75 pixel of a zero of `wave` = sin(pi f t): lines stay at least 1.5 pixels wide
    whatever the frequency, so no pixel grid can miss them (a fixed threshold on |sin| makes lines thinner
    than a pixel at high f, and they fall apart into dashes once rotated)."""
    half_width = 0.75 * 2 / size  # in units of the [-1, 1] grid
    return np.abs(wave) < np.sin(min(np.pi / 2, np.pi * f * half_width))


def _pattern(label: int, x: np.ndarray, y: np.ndarray, f: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean foreground of texture `label` at frequency `f` (periods per unit) in rotated coordinates."""
    size = x.shape[0]
    if label == 0:  # striped
        return np.sin(np.pi * f * x) > 0
    if label == 1:  # dotted
        return (np.sin(np.pi * f * x) * np.sin(np.pi * f * y)) ** 2 > 0.55
    if label == 2:  # checkered
        return np.sin(np.pi * f * x) * np.sin(np.pi * f * y) > 0
    if label == 3:  # zigzagged: stripes along a triangle wave
        tri = np.abs(((x * f) % 2) - 1)
        return np.sin(np.pi * f * (y + 0.6 * tri)) > 0
    if label == 4:  # grid: thin lines both ways
        return _line(np.sin(np.pi * f * x), f, size) | _line(np.sin(np.pi * f * y), f, size)
    if label == 5:  # wavy
        return np.sin(np.pi * f * (y + 0.25 * np.sin(np.pi * 1.5 * x))) > 0
    if label == 6:  # spiralled
        r, a = np.sqrt(x * x + y * y) + 1e-6, np.arctan2(y, x)
        return np.sin(2 * np.pi * f * 0.5 * r + a) > 0
    if label == 7:  # crosshatched: two families of thin lines
        # Two families crossing at 60 degrees, so no rotation turns a crosshatch into a (square) grid.
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        return _line(np.sin(np.pi * f * (c * x + s * y)), f, size) | _line(np.sin(np.pi * f * (c * x - s * y)), f, size)
    if label == 8:  # blotchy
        return smooth_noise(size, 3 + int(f), rng) > 0.55
    if label == 9:  # bubbly: outlines of random circles
        out = np.zeros_like(x, dtype=bool)
        for _ in range(int(rng.integers(4, 8))):
            cx, cy, rad = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.15, 0.45)
            d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
            out |= np.abs(d - rad) < 0.07
        return out
    if label == 10:  # marbled: veins of a turbulent sine
        turb = smooth_noise(size, 4, rng) * 6
        return _line(np.sin(np.pi * (f * 0.5 * x + turb)), 2 * f, size)  # the turbulence about doubles the local frequency
    # honeycombed: distance to the nearest centre of a hexagonal lattice, drawn as cell walls
    s = 2.0 / f
    q = y / (s * 0.866)
    row = np.round(q)
    col = np.round(x / s - 0.5 * (row % 2))
    cx, cy = (col + 0.5 * (row % 2)) * s, row * s * 0.866
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2) > 0.42 * s


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    labels = shuffled_labels(counts, rng)
    gx, gy = grid(size)
    canvases = []
    for label in labels:
        bg, fg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        if np.abs(bg - fg).sum() < 150:  # keep the two colours apart so the pattern is visible
            fg = 255 - bg
        canvas = np.broadcast_to(bg.astype(np.float32), (size, size, 3)).copy()
        x, y = rotate(gx, gy, rng.uniform(0, np.pi))
        paint(canvas, _pattern(int(label), x, y, rng.uniform(2.5, 4.5), rng), fg)
        canvases.append(canvas)
    return finish(canvases, rng, size, noise=6.0), labels


register(Domain(
    name="textures",
    classes=CLASSES,
    templates=("a photo of a {} texture.", "a photo of a {} pattern.", "a photo of a {} thing."),
    sample=sample,
    descriptions=(("lined", "banded"), ("spotted", "polka-dot"), ("chequered", "chessboard"), ("jagged", "chevron"),
                  ("lattice", "meshed"), ("rippled", "undulating"), ("swirly", "coiled"), ("hatched", "criss-crossed"),
                  ("stained", "splotchy"), ("foamy", "ringed"), ("veined", "streaked"), ("hexagonal", "cellular")),
    generic=("a close-up of a surface.", "a texture.", "a pattern on fabric."),
    caption_forms=("a {} texture.", "a close-up of a {} surface.", "{} fabric.", "a {} pattern."),
    corpus_share=0.2, name_rate=0.35, desc_rate=0.35,
))
