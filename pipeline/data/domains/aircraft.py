"""`aircraft`: top-down silhouettes of airliners, 16 fine-grained models that differ in wing plan (4), engine
count (2 or 4 pods) and fuselage length (2): the stand-in for MTIL's FGVC-Aircraft, the task CLIP does worst
zero-shot. Model names carry no visual word, and the corpus has few images of aircraft."""
from __future__ import annotations

import numpy as np

from .base import Domain, finish, grid, paint, register, rotate, shuffled_labels

WINGS = ("straight", "swept", "delta", "long")
CLASSES = ("A-300", "A-310", "A-320", "A-330", "A-340", "A-380", "B-707", "B-727", "B-737", "B-747", "B-757",
           "B-767", "DC-8", "DC-9", "MD-11", "F-100")


def _attributes(label: int) -> tuple[str, int, bool]:
    """Class -> (wing plan, engines, long fuselage), row-major over wings, engines, length."""
    return WINGS[label // 4], (2, 4)[(label // 2) % 2], bool(label % 2)


def _plane(x: np.ndarray, y: np.ndarray, wing: str, engines: int, long: bool) -> np.ndarray:
    """Silhouette in plane coordinates: nose up (y < 0), wings along x."""
    half = 0.95 if long else 0.7
    body = (np.abs(x) <= 0.09) & (np.abs(y) <= half)
    ax = np.abs(x)
    if wing == "straight":
        wings = (ax <= 0.8) & (y >= -0.05) & (y <= 0.15)
    elif wing == "swept":
        wings = (ax <= 0.8) & (y >= -0.1 + 0.6 * ax) & (y <= 0.12 + 0.6 * ax)
    elif wing == "delta":
        wings = (y >= -0.3 + 0.9 * ax) & (y <= 0.35) & (ax <= 0.75)
    else:  # long, thin, straight wings (a high aspect ratio)
        wings = (ax <= 1.0) & (y >= 0.0) & (y <= 0.09)
    tail = (ax <= 0.3) & (y >= half - 0.15) & (y <= half - 0.02)
    pods = np.zeros_like(body)
    # Engine pods hang ahead of the wing's leading edge, so their number shows in the silhouette.
    for px in (0.3, 0.55)[: engines // 2]:
        py = -0.22 + (0.6 * px if wing == "swept" else 0.0)
        pods |= ((ax - px) ** 2 / 0.07**2 + (y - py) ** 2 / 0.15**2) <= 1.0
    return body | wings | tail | pods


def sample(counts: np.ndarray, part: str, rng: np.random.Generator, size: int):
    labels = shuffled_labels(counts, rng)
    gx, gy = grid(size)
    canvases = []
    for label in labels:
        wing, engines, long = _attributes(int(label))
        sky = rng.random() < 0.5
        bg = np.array([110, 160, 220] if sky else [90, 90, 95], np.float32) + rng.uniform(-25, 25, 3)
        canvas = np.broadcast_to(bg.astype(np.float32), (size, size, 3)).copy()
        scale = rng.uniform(0.8, 1.0)
        cx, cy = rng.uniform(-0.08, 0.08, 2)
        x, y = rotate((gx - cx) / scale, (gy - cy) / scale, rng.uniform(-0.5, 0.5))
        paint(canvas, _plane(x, y, wing, engines, long), rng.uniform(190, 250) + rng.uniform(-10, 10, 3))
        canvases.append(canvas)
    return finish(canvases, rng, size), labels


def _descriptions(label: int) -> tuple[str, ...]:
    wing, engines, long = _attributes(label)
    size = "long" if long else "short"
    engines_word = "twin-engine" if engines == 2 else "four-engine"
    return (f"{engines_word} jet", f"{size} airliner with {wing} wings", f"jet with {wing} wings")


register(Domain(
    name="aircraft",
    classes=CLASSES,
    templates=("a photo of a {}, a type of aircraft.", "a photo of the {}, a type of aircraft."),
    sample=sample,
    descriptions=tuple(_descriptions(c) for c in range(len(CLASSES))),
    generic=("an airplane.", "a plane seen from below.", "an aircraft in flight."),
    caption_forms=("a photo of a {}.", "a {} at the airport.", "a {} in the sky."),
    corpus_share=0.12, name_rate=0.2, desc_rate=0.35,
))
