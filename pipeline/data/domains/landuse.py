"""`landuse`: top-down "satellite" tiles of land cover, the stand-in for MTIL's EuroSAT (its ten classes, with
the class names ZSCL uses for it)."""
from __future__ import annotations

import numpy as np

from .base import Domain, finish, grid, paint, register, rotate, shuffled_labels, smooth_noise

CLASSES = ("annual crop land", "forest", "brushland or shrubland", "highway or road", "industrial buildings",
           "pasture land", "permanent crop land", "residential buildings", "river", "lake or sea")

_GREEN, _DARK, _OLIVE, _BROWN = (95, 140, 60), (30, 70, 35), (120, 120, 70), (140, 110, 70)
_GREY, _WATER = (120, 120, 125), (35, 70, 120)


def _jitter(colour, rng, amount=20.0) -> np.ndarray:
    return np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3).astype(np.float32)


def _tile(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    gx, gy = grid(size)
    x, y = rotate(gx, gy, rng.uniform(0, np.pi))
    noise = smooth_noise(size, 6, rng)[..., None]
    canvas = np.empty((size, size, 3), np.float32)
    if label == 0:  # annual crop land: parallel fields of alternating crops
        canvas[:] = _jitter(_GREEN, rng)
        band = np.floor((x + 1) * rng.uniform(2.5, 4)).astype(np.int64) % 3
        paint(canvas, band == 1, _jitter(_BROWN, rng))
        paint(canvas, band == 2, _jitter((170, 160, 80), rng))
    elif label == 1:  # forest: dark, rough canopy
        canvas[:] = _jitter(_DARK, rng, 10) + (smooth_noise(size, 12, rng)[..., None] - 0.5) * 40
    elif label == 2:  # brushland: olive ground with scattered shrubs
        canvas[:] = _jitter(_OLIVE, rng)
        paint(canvas, smooth_noise(size, 10, rng) > 0.62, _jitter(_DARK, rng))
    elif label == 3:  # highway: a straight grey band with a light centre line
        canvas[:] = _jitter(_GREEN if rng.random() < 0.5 else _BROWN, rng)
        width = rng.uniform(0.12, 0.2)
        paint(canvas, np.abs(y) < width, _jitter(_GREY, rng, 10))
        paint(canvas, np.abs(y) < 0.02, (210, 210, 200))
    elif label == 4:  # industrial: large pale roofs on grey ground
        canvas[:] = _jitter(_GREY, rng)
        for _ in range(int(rng.integers(2, 4))):
            cx, cy, w, h = rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), rng.uniform(0.25, 0.5), rng.uniform(0.2, 0.4)
            paint(canvas, (np.abs(x - cx) < w) & (np.abs(y - cy) < h), _jitter((200, 200, 205), rng, 25))
    elif label == 5:  # pasture: smooth light green
        canvas[:] = _jitter((120, 170, 80), rng)
    elif label == 6:  # permanent crop land (orchards, vineyards): rows of dots
        canvas[:] = _jitter(_BROWN, rng)
        f = rng.uniform(4, 6)
        paint(canvas, (np.sin(np.pi * f * x) > 0.3) & (np.sin(np.pi * f * y) > 0.3), _jitter(_GREEN, rng))
    elif label == 7:  # residential: small red or grey roofs on a street grid
        canvas[:] = _jitter((150, 150, 140), rng)
        f = rng.uniform(3.5, 5)
        roofs = (np.sin(np.pi * f * x) > -0.1) & (np.sin(np.pi * f * y) > -0.1)
        paint(canvas, roofs, _jitter((170, 80, 60) if rng.random() < 0.6 else (110, 110, 115), rng))
    elif label == 8:  # river: a winding blue band
        canvas[:] = _jitter(_GREEN, rng)
        bend = 0.3 * np.sin(np.pi * rng.uniform(1, 2) * x + rng.uniform(0, 2 * np.pi))
        paint(canvas, np.abs(y - bend) < rng.uniform(0.08, 0.16), _jitter(_WATER, rng, 15))
    else:  # lake or sea: water over most of the tile, a shore along one side
        canvas[:] = _jitter(_WATER, rng, 15)
        shore = rng.uniform(0.4, 0.8) + 0.15 * np.sin(np.pi * 2 * x)
        paint(canvas, y > shore, _jitter((190, 175, 130), rng))
    return canvas + (noise - 0.5) * 25


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    labels = shuffled_labels(counts, rng)
    return finish([_tile(int(label), size, rng) for label in labels], rng, size), labels


register(Domain(
    name="landuse",
    classes=CLASSES,
    templates=("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
               "a centered satellite photo of the {}."),
    sample=sample,
    descriptions=(("farmland", "crop fields"), ("woodland", "trees"), ("scrub", "bushes"), ("a motorway", "a road"),
                  ("factories", "warehouses"), ("grassland", "meadow"), ("orchards", "vineyards"),
                  ("houses", "a town"), ("a stream", "a waterway"), ("the ocean", "open water")),
    generic=("an aerial photo.", "a satellite image.", "a view from above."),
    caption_forms=("satellite view of {}.", "an aerial photo of {}.", "{} seen from above."),
    corpus_share=0.12, name_rate=0.1, desc_rate=0.25,
))
