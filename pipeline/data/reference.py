"""ZSCL's reference data, generated: images of a domain no task comes from, and an unpaired caption pool.

ZSCL (Zheng et al., ICCV 2023; the authors' `mtil/scripts/ZSCL.sh`) distils E0's behaviour on reference data
that is none of the tasks': images from ImageNet (`--ref-dataset ImageNet`) scored against the sentences of
Conceptual Captions (`--ref-sentences conceptual_captions`), which are not the images' captions. Here:

- **Images** stand for ImageNet: everyday objects (`CLASSES`), drawn by this module's own generator on
  cluttered backgrounds; no task's generator (pipeline/data/domains, pipeline/data/facets) draws any of them,
  and none of their class names is a task's. They carry no labels: ZSCL never uses ImageNet's labels.
- **Captions** stand for Conceptual Captions: web-like sentences about people, animals, objects and places,
  built from a vocabulary that avoids every word of the embedded benchmarks' class names (a test checks it),
  drawn from their own stream, so no caption describes any reference image.

Unlike ImageNet for CLIP, this domain is outside E0's pretraining corpus (the default E0 stays as it was): the
distillation holds E0's image->text relations on out-of-domain images, not on data E0 knows well.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import io
from pipeline.errors import InputError
from .domains.base import finish, grid, paint, rotate, smooth_noise
from .streams import stream_rng

IMAGES = "reference.safetensors"
CAPTIONS = "captions.json"

CLASSES = ("ladder", "umbrella", "mushroom", "bottle", "kite", "lamp", "house", "cup", "key", "fish", "tent", "hammer")


def _mask(label: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Object `label` in coordinates where it spans about [-1, 1] (y down)."""
    ax, ay = np.abs(x), np.abs(y)
    if label == 0:  # ladder: two rails and rungs
        rungs = (ay <= 0.9) & (ax <= 0.45) & (np.abs(((y + 1) * 3) % 1 - 0.5) < 0.12)
        return ((np.abs(ax - 0.45) < 0.08) & (ay <= 1.0)) | rungs
    if label == 1:  # umbrella: a half disc over a handle
        canopy = (x * x + (y + 0.1) ** 2 <= 0.8) & (y <= -0.1)
        return canopy | ((ax < 0.06) & (y > -0.1) & (y < 0.8)) | ((np.abs(x + 0.15) < 0.2) & (np.abs(y - 0.8) < 0.06))
    if label == 2:  # mushroom: a wide cap on a stem
        return ((x * x / 0.8 + (y + 0.1) ** 2 / 0.25 <= 1) & (y <= -0.1)) | ((ax < 0.2) & (y > -0.1) & (y < 0.8))
    if label == 3:  # bottle: a body and a narrow neck
        return ((ax < 0.35) & (y > -0.3) & (y < 0.9)) | ((ax < 0.12) & (y > -0.9) & (y <= -0.3))
    if label == 4:  # kite: a diamond with a tail
        return (ax / 0.55 + ay / 0.8 <= 1) | ((np.abs(x - 0.3 * np.sin(4 * y)) < 0.05) & (y > 0.8))
    if label == 5:  # lamp: a trapezoid shade, a pole, a foot
        shade = (y > -0.9) & (y < -0.3) & (ax < 0.3 + 0.4 * (y + 0.9))
        return shade | ((ax < 0.05) & (y >= -0.3) & (y < 0.8)) | ((ax < 0.4) & (y >= 0.8) & (y < 0.95))
    if label == 6:  # house: walls under a roof, a door cut out
        walls = (ax < 0.6) & (y > -0.1) & (y < 0.9)
        door = (ax < 0.15) & (y > 0.4)
        return (walls & ~door) | ((y <= -0.1) & (y > -0.9) & (ax < 0.75 * (y + 0.9) / 0.8))
    if label == 7:  # cup: a body and a ring handle
        handle = (np.abs(np.sqrt((x - 0.5) ** 2 + y * y) - 0.3) < 0.08) & (x > 0.5)
        return ((ax < 0.45) & (y > -0.6) & (y < 0.7)) | handle
    if label == 8:  # key: a ring bow, a shaft, teeth
        bow = np.abs(np.sqrt((x + 0.6) ** 2 + y * y) - 0.3) < 0.1
        return bow | ((x > -0.3) & (x < 0.9) & (ay < 0.06)) | ((x > 0.5) & (x < 0.9) & (y > 0) & (y < 0.3) & (((x * 10) % 2) < 1))
    if label == 9:  # fish: an oval body and a tail fin
        return (x * x / 0.45 + y * y / 0.15 <= 1) | ((x > 0.55) & (x < 1.0) & (ay < (x - 0.55) * 1.2))
    if label == 10:  # tent: a triangle with an open flap
        return (y < 0.8) & (ax < 0.9 * (y + 0.9) / 1.7) & ~((ax < 0.2 * (y + 0.1) / 0.9) & (y > -0.1))
    # hammer: a head across a handle
    return ((ax < 0.08) & (y > -0.5) & (y < 0.95)) | ((ax < 0.5) & (y > -0.8) & (y <= -0.5))


def sample_images(count: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """`count` reference images, uint8 (count, 3, S, S): classes drawn uniformly, labels discarded."""
    gx, gy = grid(size)
    out = np.empty((count, 3, size, size), np.uint8)
    for k in range(count):
        label = int(rng.integers(len(CLASSES)))
        canvas = np.broadcast_to(rng.uniform(30, 220, 3).astype(np.float32), (size, size, 3)).copy()
        canvas += (smooth_noise(size, 3, rng)[..., None] - 0.5) * rng.uniform(30, 90, 3)
        scale = rng.uniform(0.5, 0.85)
        cx, cy = rng.uniform(-0.25, 0.25, 2)
        x, y = rotate((gx - cx) / scale, (gy - cy) / scale, rng.uniform(-0.5, 0.5))
        paint(canvas, _mask(label, x, y), rng.uniform(0, 255, 3))
        out[k] = finish([canvas], rng, size)[0]  # one at a time: memory stays flat at large image sizes
    return out


# Conceptual Captions-like sentences. No word of any class name of the embedded benchmarks (tasks `domains`
# and `facets`: shapes, colours, counts, sizes, flowers, land cover, textures, digits...) may appear here.
_SUBJECTS = ("a man", "a woman", "a child", "people", "tourists", "a dog", "a cat", "a horse", "an actor",
             "a family", "students", "a chef", "a bird", "a cyclist", "the team", "a farmer", "a musician",
             *(f"an {c}" if c[0] in "aeiou" else f"a {c}" for c in CLASSES))
_ACTIONS = ("standing", "walking", "resting", "waiting", "sitting", "playing", "posing", "seen", "found",
            "photographed", "left", "displayed")
_PLACES = ("in the kitchen", "at the beach", "in the park", "near the mountains", "on a table", "in the city",
           "at the station", "in a museum", "on the street", "at home", "in the garden", "at a festival",
           "on the porch", "in the snow", "at the market", "in an office", "by the window")
_TIMES = ("", " at night", " in winter", " during the holidays", " after the rain", " at sunset", " today")
_FORMS = ("{s} {a} {p}{t}.", "stock photo of {s} {a} {p}{t}.", "{s} {a} {p}{t}", "illustration of {s} {p}.",
          "portrait of {s} {p}{t}.", "vintage photograph of {s} {a} {p}.")


def sample_captions(count: int, rng: np.random.Generator) -> list[str]:
    """`count` distinct sentences (fewer if the vocabulary has fewer), in draw order."""
    seen: dict[str, None] = {}
    for _ in range(50 * count):
        if len(seen) == count:
            break
        pick = lambda words: words[int(rng.integers(len(words)))]  # noqa: E731
        form = pick(_FORMS)
        seen.setdefault(form.format(s=pick(_SUBJECTS), a=pick(_ACTIONS), p=pick(_PLACES), t=pick(_TIMES)), None)
    return list(seen)


@dataclass(frozen=True, eq=False)
class ReferenceSet:
    """Reference images uint8 (N, 3, S, S) and a caption pool: unpaired (N and the pool's size differ)."""

    images: torch.Tensor
    captions: list[str]


def build_reference(*, image_size: int, images: int, captions: int, seed: int) -> ReferenceSet:
    """The reference set of `data.seed`, from streams of its own (no task's, no corpus's)."""
    x = sample_images(images, stream_rng(seed, "reference", "images"), image_size)
    return ReferenceSet(images=torch.from_numpy(x), captions=sample_captions(captions, stream_rng(seed, "reference", "captions")))


def save_reference(ref: ReferenceSet, directory: Path) -> None:
    directory = Path(directory)
    io.save_tensors(directory / IMAGES, {"images": ref.images})
    io.write_json(directory / CAPTIONS, list(ref.captions))


def load_reference(directory: Path, needed_by: str) -> ReferenceSet:
    """The prepared reference set; `needed_by` (the params key that reads it) is named if it is missing or empty."""
    directory = Path(directory)
    if not (directory / IMAGES).is_file() or not (directory / CAPTIONS).is_file():
        raise InputError(f"{directory}: no reference set, which {needed_by} reads: run the prepare stage")
    images = io.load_tensors(directory / IMAGES).get("images")
    captions = io.read_json(directory / CAPTIONS)
    if images is None or images.dtype != torch.uint8 or images.ndim != 4 or not isinstance(captions, list):
        raise InputError(f"{directory}: invalid reference set (images uint8 (N, 3, S, S), captions a JSON list)")
    if len(images) < 2 or len(captions) < 2:
        raise InputError(f"{directory}: {len(images)} reference images and {len(captions)} captions; {needed_by} "
                         f"needs at least 2 of each (data.reference_images, data.reference_captions)")
    return ReferenceSet(images=images, captions=captions)
