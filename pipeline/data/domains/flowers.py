"""`flowers`: one flower head on foliage, 20 fine-grained species that differ only in the number of petals
(4, 5, 6 or 8) and their colour (5 colours): the stand-in for MTIL's Flowers102. Species names carry no
visual word, so only captions that use them teach E0 what they look like."""
from __future__ import annotations

import numpy as np

from .base import Domain, finish, grid, paint, register, rotate, shuffled_labels, smooth_noise

PETALS = (4, 5, 6, 8)
COLOURS = {"white": (235, 235, 225), "yellow": (240, 210, 40), "pink": (240, 140, 190), "purple": (130, 60, 170),
           "red": (200, 30, 40)}
CLASSES = ("buttercup", "daisy", "primrose", "lotus", "dahlia", "aster", "peony", "camellia", "gardenia", "magnolia",
           "azalea", "begonia", "clematis", "freesia", "gazania", "jasmine", "lily", "marigold", "orchid", "poppy")
_COUNT_WORDS = {4: "four", 5: "five", 6: "six", 8: "eight"}


def _attributes(label: int) -> tuple[int, str]:
    """Class -> (petal count, colour name): row-major over petal counts, then colours."""
    return PETALS[label // len(COLOURS)], list(COLOURS)[label % len(COLOURS)]


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    labels = shuffled_labels(counts, rng)
    gx, gy = grid(size)
    canvases = []
    for label in labels:
        petals, colour = _attributes(int(label))
        canvas = np.empty((size, size, 3), np.float32)
        leaves = smooth_noise(size, 5, rng)[..., None]
        canvas[:] = np.array([40, 90, 35], np.float32) * (0.6 + 0.8 * leaves)
        scale = rng.uniform(0.75, 0.95)
        cx, cy = rng.uniform(-0.1, 0.1, 2)
        x, y = rotate((gx - cx) / scale, (gy - cy) / scale, rng.uniform(0, 2 * np.pi))
        r, a = np.sqrt(x * x + y * y), np.arctan2(y, x)
        # A petal is the lobe of a rose curve: |cos(k a / 2)| bulges once per petal around the circle.
        lobe = np.abs(np.cos(petals * a / 2)) ** rng.uniform(0.6, 1.0)
        paint(canvas, r <= 0.25 + 0.75 * lobe, np.asarray(COLOURS[colour]) + rng.uniform(-20, 20, 3))
        paint(canvas, r <= rng.uniform(0.18, 0.26), (230, 170, 30) if colour != "yellow" else (150, 90, 20))
        canvases.append(canvas)
    return finish(canvases, rng, size), labels


def _descriptions(label: int) -> tuple[str, ...]:
    petals, colour = _attributes(label)
    n = _COUNT_WORDS[petals]
    return (f"{colour} flower with {n} petals", f"{colour} flower", f"flower with {n} petals")


register(Domain(
    name="flowers",
    classes=CLASSES,
    templates=("a photo of a {}, a type of flower.",),
    sample=sample,
    descriptions=tuple(_descriptions(c) for c in range(len(CLASSES))),
    generic=("a flower in the garden.", "a close-up of a flower.", "a blooming plant."),
    caption_forms=("a photo of a {}.", "a {} in bloom.", "a close-up of a {}."),
    corpus_share=0.16, name_rate=0.3, desc_rate=0.4,
))
