"""The `facets` benchmark: a rendered multi-facet image world (the first embedded benchmark; the default is now
`domains`, and this world stays as a second benchmark and the compression branch's default target).

Every image shows 1-4 identical objects and carries six independent attributes ("facets"): shape, colour,
fill pattern, count, size and background. Each facet is one task with its own class words and its own
prompt templates; a separate caption corpus describes images in the same words, so a CLIP model pretrained
on it (E0) can classify every facet zero-shot. Rendering is pure numpy, vectorised per object slot over a
small patch around each object, and fully determined by the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .streams import stream_rng
from .types import CaptionCorpus, TaskData


@dataclass(frozen=True)
class Facet:
    name: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]


# Class words are distinct across facets (no "blue" sky, no "green" grass) so a prompt names one facet only;
# templates avoid "a {}" before vowel-initial words ("outlined", "orange") to stay grammatical.
FACETS: tuple[Facet, ...] = (
    Facet("shape", ("circle", "square", "triangle", "diamond", "cross", "star"),
          ("a drawing of a {}.", "a {} shape.", "a picture of a {}.")),
    Facet("colour", ("red", "green", "blue", "yellow", "purple", "orange", "pink"),
          ("something coloured {}.", "the colour is {}.", "an object painted {}.")),
    Facet("fill", ("solid", "outlined", "striped", "checkered"),
          ("the shape is {}.", "the fill pattern is {}.", "{} shapes.")),
    Facet("count", ("one", "two", "three", "four"),
          ("the number of shapes is {}.", "a picture with a count of {}.", "{} in total.")),
    Facet("size", ("small", "medium", "large"),
          ("a {} sized object.", "the shapes are {}.", "something {} in size.")),
    Facet("background", ("black", "white", "grass", "sky"),
          ("a picture on a {} background.", "shapes in front of a {} background.", "the background is {}.")),
)
_BY_NAME = {f.name: f for f in FACETS}

_COLOURS = np.array([[220, 30, 30], [70, 225, 70], [30, 70, 235], [245, 225, 30],
                     [145, 45, 200], [250, 140, 10], [250, 135, 200]], np.float32)
_RADIUS = np.array([0.115, 0.15, 0.20], np.float32)  # object radius as a fraction of the image side
_MIN_SIZE = 24


def facet_names() -> list[str]:
    """Task names of the facet world, in the default task order."""
    return [f.name for f in FACETS]


def _facet(name: str) -> Facet:
    if name not in _BY_NAME:
        raise ValueError(f"unknown facet task {name!r}; known: {facet_names()}")
    return _BY_NAME[name]




def _shape_mask(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test in object coordinates (y down). Every shape fits the box [-1, 1]^2, which is what keeps
    objects inside their cell and off the image border; areas are roughly comparable."""
    au, av = np.abs(u), np.abs(v)
    if shape == 0:  # circle
        return u * u + v * v <= 1.0
    if shape == 1:  # square
        return np.maximum(au, av) <= 0.85
    if shape == 2:  # triangle, apex up
        return (v <= 0.8) & (au <= (v + 1.0) * 0.55)
    if shape == 3:  # diamond
        return au + av <= 1.0
    if shape == 4:  # cross (plus sign)
        return ((au <= 0.36) & (av <= 1.0)) | ((av <= 0.36) & (au <= 1.0))
    # star: five points, radius alternating between 1 and 0.45 with the angle
    ang = np.arctan2(u, -v) * (5 / (2 * np.pi))
    tri = np.abs(ang - np.round(ang)) * 2  # 0 at a point, 1 between points
    return np.sqrt(u * u + v * v) <= 1.0 - 0.55 * tri


def _backgrounds(kind: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, S, S, 3) float32 backgrounds: black, white, grass (green noise), sky (blue vertical gradient)."""
    n = len(kind)
    base = np.array([[12, 12, 18], [235, 235, 232], [35, 85, 28], [0, 0, 0]], np.float32)[kind]
    bg = np.broadcast_to((base + rng.uniform(-12, 12, (n, 3)).astype(np.float32))[:, None, None, :],
                         (n, size, size, 3)).copy()
    grass = np.flatnonzero(kind == 2)
    blades = rng.standard_normal((len(grass), size, size), dtype=np.float32)
    bg[grass] += blades[..., None] * np.array([8, 18, 6], np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    sky = np.array([70, 130, 220], np.float32) * (1 - t) + np.array([175, 212, 245], np.float32) * t
    bg[kind == 3] += sky[None]
    return bg


def render_world(attrs: dict[str, np.ndarray], image_size: int, rng: np.random.Generator,
                 chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Render images from per-image class indices ``attrs[facet] (n,)``.

    Returns ``images`` uint8 (n, 3, S, S) and ``foreground`` bool (n, S, S) (pixels painted by an object,
    used by tests to check that every facet is visible). Nuisances: radius +-7%, position jitter inside the
    object's cell, colour jitter, background tint and pixel noise.
    """
    S = int(image_size)
    if S < _MIN_SIZE:
        raise ValueError(f"image_size: must be >= {_MIN_SIZE}, got {S}")
    a = {f.name: np.asarray(attrs[f.name], np.int64) for f in FACETS}
    n = len(a["shape"])
    radius = (_RADIUS[a["size"]] * S * rng.uniform(0.93, 1.07, n)).astype(np.float32)
    colour = _COLOURS[a["colour"]] + rng.uniform(-18, 18, (n, 3)).astype(np.float32)
    # Count k >= 2 puts the objects in k distinct quadrants so they never overlap; a single object roams
    # the whole image. Jitter keeps a 1-pixel margin from the cell border.
    cells = np.argsort(rng.random((n, 4)), axis=1)
    jitter = rng.uniform(-1, 1, (n, 4, 2)).astype(np.float32)
    single = (a["count"] == 0)[:, None]
    half = np.where(single, S / 2, S / 4)
    cell_xy = np.stack([cells % 2, cells // 2], -1) * (S / 2) + S / 4  # (n, 4, 2) quadrant centres
    centre = np.where(single[..., None], S / 2, cell_xy)
    room = np.maximum(half - radius[:, None] - 1, 0)[..., None]
    centre = (centre + jitter * room).astype(np.float32)

    thick = max(1.0, S / 28)  # outline width in pixels
    stripe, check = max(1, round(S / 32)), max(2, round(S / 16))
    P = int(np.ceil(2 * radius.max() + 4)) if n else 1  # patch side holding any object
    ar = np.arange(P)
    images = np.empty((n, 3, S, S), np.uint8)
    fg_all = np.zeros((n, S, S), bool)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        m = hi - lo
        canvas = np.pad(_backgrounds(a["background"][lo:hi], S, rng), ((0, 0), (P, P), (P, P), (0, 0)))
        fg = np.zeros((m, S + 2 * P, S + 2 * P), bool)
        for k in range(4):
            for s in range(len(FACETS[0].classes)):
                idx = np.flatnonzero((a["count"][lo:hi] >= k) & (a["shape"][lo:hi] == s))
                if not len(idx):
                    continue
                g = lo + idx
                cx, cy, r = centre[g, k, 0], centre[g, k, 1], radius[g]
                x0, y0 = np.floor(cx).astype(np.int64) - P // 2, np.floor(cy).astype(np.int64) - P // 2
                xs = (x0[:, None] + ar)[:, None, :]  # absolute pixel columns (m', 1, P)
                ys = (y0[:, None] + ar)[:, :, None]  # absolute pixel rows (m', P, 1)
                u = (xs + 0.5 - cx[:, None, None]) / r[:, None, None]
                v = (ys + 0.5 - cy[:, None, None]) / r[:, None, None]
                outer = _shape_mask(s, u, v)
                shrink = (r / np.maximum(r - thick, 0.5))[:, None, None]
                border = outer & ~_shape_mask(s, u * shrink, v * shrink)
                fill = a["fill"][g][:, None, None]
                pattern = np.where(fill == 2, (ys // stripe) % 2 == 0,
                                   np.where(fill == 3, (xs // check + ys // check) % 2 == 0, fill == 0))
                paint = border | (outer & pattern)
                ii, yy, xx = idx[:, None, None], ys + P, xs + P
                canvas[ii, yy, xx] = np.where(paint[..., None], colour[g][:, None, None, :], canvas[ii, yy, xx])
                fg[ii, yy, xx] |= paint
        img = canvas[:, P:P + S, P:P + S]
        img += rng.standard_normal(img.shape, dtype=np.float32) * 5.0
        images[lo:hi] = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
        fg_all[lo:hi] = fg[:, P:P + S, P:P + S]
    return images, fg_all


def _sample_attrs(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f.name: rng.integers(0, len(f.classes), n) for f in FACETS}


def _split(facets: tuple[Facet, ...], per_class: int, image_size: int, rng: np.random.Generator,
           class_weights: np.ndarray | None = None):
    """Images labelled by the joint class of ``facets`` (row-major over their classes), ``per_class`` each,
    scaled per class by ``class_weights`` (>= 1 image per class) for an imbalanced split."""
    if per_class < 1:
        raise ValueError(f"per_class: must be >= 1, got {per_class}")
    sizes = [len(f.classes) for f in facets]
    counts = np.full(int(np.prod(sizes)), per_class)
    if class_weights is not None:
        counts = np.maximum(1, np.rint(per_class * np.asarray(class_weights))).astype(np.int64)
    attrs = _sample_attrs(int(counts.sum()), rng)  # before the labels: the streams of the facet tasks stay as they were
    labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    for facet, index in zip(facets, np.unravel_index(labels, sizes)):
        attrs[facet.name] = index
    images, _ = render_world(attrs, image_size, rng)
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def _joint(name: str) -> tuple[Facet, ...]:
    """'count+colour' -> the facets whose joint values are the classes (a task of many similar classes)."""
    facets = tuple(_facet(part) for part in name.split("+"))
    if len({f.name for f in facets}) != len(facets):
        raise ValueError(f"task {name!r}: a facet appears twice")
    return facets


def _joint_classes(facets: tuple[Facet, ...]) -> list[str]:
    """Class texts of a joint task as noun phrases ('three red objects'), row-major like the labels."""
    keep = {f.name for f in facets}
    texts = []
    for values in np.ndindex(*[len(f.classes) for f in facets]):
        a = {f.name: 0 for f in FACETS} | {f.name: int(v) for f, v in zip(facets, values)}
        # A fixed stream per class: describe() picks between equivalent wordings at random.
        texts.append(describe(a, keep, np.random.default_rng(0)))
    return texts


def is_facet_task(name: str) -> bool:
    """A facet ('shape') or a joint of distinct facets ('count+colour')."""
    try:
        _joint(name)
    except ValueError:
        return False
    return True


def build_facet_task(name: str, *, image_size: int, train_per_class: int, test_per_class: int,
                         seed: int, imbalance: float = 1.0) -> TaskData:
    """Images of the whole world labelled by facet ``name`` (or the joint of facets 'a+b'); train/test use
    separate streams. ``imbalance`` > 1 makes the training split long-tailed: class k of K keeps
    ``imbalance ** (-k / (K - 1))`` of ``train_per_class`` (class 0 the most, the last ``1/imbalance``);
    the test split stays balanced so per-class accuracy is measured equally."""
    if imbalance < 1:
        raise ValueError(f"imbalance: must be >= 1, got {imbalance}")
    facets = _joint(name)
    if len(facets) == 1:
        classes, templates = list(facets[0].classes), list(facets[0].templates)
    else:
        classes, templates = _joint_classes(facets), ["a picture of {}.", "{}.", "an image showing {}."]
    k = len(classes)
    weights = imbalance ** (-np.arange(k) / max(1, k - 1)) if imbalance > 1 else None
    train_x, train_y = _split(facets, train_per_class, image_size, stream_rng(seed, "task", name, "train"), weights)
    test_x, test_y = _split(facets, test_per_class, image_size, stream_rng(seed, "task", name, "test"))
    return TaskData(name=name, classes=classes, templates=templates,
                    train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x")) else "s")


def describe(a: dict[str, int], keep: set[str], rng: np.random.Generator) -> str:
    """Noun phrase for one image naming exactly the facets in ``keep``, e.g. 'two small red circles'."""
    word = {f.name: f.classes[a[f.name]] for f in FACETS}
    many = a["count"] > 0
    adjs = [word[f] for f in ("colour", "fill") if f in keep]
    rng.shuffle(adjs)  # "red striped" and "striped red" both read well; size always leads
    if "size" in keep:
        adjs.insert(0, word["size"])
    if "shape" in keep:
        noun = word["shape"]
        noun = (_plural(noun) if rng.random() < 0.7 else noun + " shapes") if many else noun
    else:
        noun = ("objects" if many else "object") if rng.random() < 0.5 else ("shapes" if many else "shape")
    body = " ".join(adjs + [noun])
    det = word["count"] if "count" in keep else ("some" if many else _an(body))
    phrase = f"{det} {body}"
    if "background" in keep:
        bg = word["background"]
        phrase = f"{phrase} on a {bg} background" if rng.random() < 0.7 else f"a {bg} background with {phrase}"
    return phrase


def caption(a: dict[str, int], rng: np.random.Generator) -> str:
    """Half full descriptions, 30% with 2-5 facets, 20% a task template (optionally plus a description)."""
    names = [f.name for f in FACETS]
    r = rng.random()
    if r < 0.5:
        return describe(a, set(names), rng) + "."
    if r < 0.8:
        keep = rng.choice(names, size=int(rng.integers(2, len(names))), replace=False)
        return describe(a, set(keep.tolist()), rng) + "."
    facet = FACETS[int(rng.integers(len(FACETS)))]
    text = facet.templates[int(rng.integers(len(facet.templates)))].replace("{}", facet.classes[a[facet.name]])
    if rng.random() < 0.5:
        keep = rng.choice(names, size=int(rng.integers(2, len(names) + 1)), replace=False)
        text = f"{text} {describe(a, set(keep.tolist()), rng)}."
    return text


def build_facet_corpus(*, image_size: int, size: int, seed: int) -> CaptionCorpus:
    """``size`` captioned images from their own seed stream (disjoint from every task's streams)."""
    if size < 1:
        raise ValueError(f"size: must be >= 1, got {size}")
    rng = stream_rng(seed, "corpus")
    attrs = _sample_attrs(size, rng)
    images, _ = render_world(attrs, image_size, rng)
    captions = [caption({k: int(v[i]) for k, v in attrs.items()}, rng) for i in range(size)]
    return CaptionCorpus(images=torch.from_numpy(images), captions=captions)
