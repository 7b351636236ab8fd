"""What every domain of the `domains` benchmark is made of, and the registry they fill (a leaf module).

A domain stands for one of MTIL's data sets: its own generator of images, its own class names and prompt
templates, and its own caption vocabulary for E0's pretraining corpus. Nothing of one domain's generator is
used by another, so the tasks share no images and no look (MTIL's tasks are different data sets).

How E0's zero-shot ability is made partial and uneven, as CLIP's is on MTIL (Aircraft 24 %, Pets 89 %):
- **Uneven amounts**: each domain has its share of the corpus (`corpus_share`).
- **Caption noise**: of a domain's corpus captions, only `name_rate` name the class with the task's class
  name; `desc_rate` describe it in other words (synonyms, paraphrases, a partial description of what it
  looks like), which E0 can only partly connect with the class name; the rest say nothing of the class
  ("a satellite photo."), and `wrong_rate` of the named ones name a wrong class (web alt-text is noisy).
- **A shift of look**: corpus images are rendered as "web" images (`web_style`: zoom, colour and contrast
  changes, some grey), the tasks' images as "data-set" images, so what E0 learned carries over only in part;
  a domain's `look_shift` widens that gap (deeper zooms, blur, a colour cast) with its evidence kept, as
  EuroSAT's satellite tiles and MNIST's scans are far from the web photos CLIP learned from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


# counts (per class) -> (images uint8 (n, 3, S, S), labels int64 (n,)); `part` is train / test / corpus
Sampler = Callable[[np.ndarray, str, np.random.Generator, int], "tuple[np.ndarray, np.ndarray]"]


@dataclass(frozen=True)
class Domain:
    name: str
    classes: tuple[str, ...]
    templates: tuple[str, ...]  # the task's prompt templates (ZSCL's for the data set it stands for)
    sample: Sampler
    descriptions: tuple[tuple[str, ...], ...]  # per class: other words for it (synonyms, partial descriptions)
    generic: tuple[str, ...]  # captions that name only the domain ("a satellite photo.")
    caption_forms: tuple[str, ...]  # free sentences around a class name or description: "a photo of {}."
    corpus_share: float
    name_rate: float
    desc_rate: float
    wrong_rate: float = 0.05
    look_shift: float = 0.0  # 0..1: how much further its corpus images are from its task images (`web_style`)
    notes: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if len(self.descriptions) != len(self.classes):
            raise ValueError(f"domain {self.name}: {len(self.descriptions)} descriptions for {len(self.classes)} classes")
        if self.name_rate + self.desc_rate > 1:
            raise ValueError(f"domain {self.name}: name_rate + desc_rate > 1")
        if not 0 <= self.look_shift <= 1:
            raise ValueError(f"domain {self.name}: look_shift {self.look_shift} is outside 0..1")

    def caption(self, label: int, rng: np.random.Generator, templates: bool = False, template_names: bool = True) -> str:
        """One corpus caption of an image of class `label` (see the module docstring for the mix). `templates`:
        the task's prompt templates are among the forms too (`data.corpus_templates`); `template_names` false:
        a template's slot holds only other words for the class, never its name (`data.corpus_template_names`)."""
        r = rng.random()
        named = r < self.name_rate
        forms = self.caption_forms + self.templates if templates and (template_names or not named) else self.caption_forms
        form = forms[int(rng.integers(len(forms)))]
        if named:
            if rng.random() < self.wrong_rate:
                label = int(rng.integers(len(self.classes)))
            return form.replace("{}", self.classes[label])
        if r < self.name_rate + self.desc_rate:
            words = self.descriptions[label]
            return form.replace("{}", words[int(rng.integers(len(words)))])
        return self.generic[int(rng.integers(len(self.generic)))]


DOMAINS: dict[str, Domain] = {}


def register(domain: Domain) -> Domain:
    if domain.name in DOMAINS:
        raise ValueError(f"domain {domain.name!r} registered twice")
    DOMAINS[domain.name] = domain
    return domain




def shuffled_labels(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int64)


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1], x to the right and y down, each (S, S)."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(t, t, indexing="xy")


def rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * x + s * y, -s * x + c * y


def smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S) value noise in [0, 1]: a random `cells` x `cells` lattice, bilinearly interpolated."""
    lattice = rng.random((cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, size, dtype=np.float32)
    i = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i
    rows = lattice[i] * (1 - f)[:, None] + lattice[i + 1] * f[:, None]  # (S, cells + 1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def paint(canvas: np.ndarray, mask: np.ndarray, colour) -> None:
    """canvas (S, S, 3) float: pixels under the boolean or [0, 1] `mask` take `colour`."""
    m = mask.astype(np.float32)[..., None]
    canvas *= 1 - m
    canvas += m * np.asarray(colour, np.float32)


def finish(canvases: list[np.ndarray], rng: np.random.Generator, size: int, noise: float = 4.0) -> np.ndarray:
    """(S, S, 3) float canvases -> uint8 (n, 3, S, S), with a little pixel noise."""
    if not canvases:
        return np.zeros((0, 3, size, size), np.uint8)
    x = np.stack(canvases)
    x += rng.standard_normal(x.shape, dtype=np.float32) * noise
    return np.clip(np.rint(x), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)


def web_style(images: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """Corpus images look like web photos of the same things, not like the data set's: a random zoom
    (crop 70-100 % of the side, resized back), brightness and contrast changes, and one in five grey.
    `shift` (a domain's `look_shift`, 0..1) moves them further from the task's look with the evidence kept
    (the same images and captions): deeper zooms (down to 40 % of the side at 1), a blur, a colour cast per
    channel and more grey images, as EuroSAT's or MNIST's images are far from the web photos CLIP learned from.
    At 0 it draws exactly what it drew before the shift existed."""
    n, _, s, _ = images.shape
    out = np.empty_like(images)
    for k in range(n):
        side = int(round(s * rng.uniform(0.7 - 0.3 * shift, 1.0)))
        y0, x0 = rng.integers(0, s - side + 1, 2)
        idx = np.minimum((np.arange(s) * side / s).astype(np.int64), side - 1)
        img = images[k][:, y0 + idx][:, :, x0 + idx].astype(np.float32)
        img = (img - 128) * rng.uniform(0.7, 1.2) + 128 + rng.uniform(-30, 30)
        if rng.random() < 0.2 + 0.3 * shift:
            img[:] = img.mean(0, keepdims=True)
        if shift > 0:
            img = _blur(img, shift)
            img = (img - 128) * rng.uniform(1 - 0.6 * shift, 1 + 0.6 * shift, size=(3, 1, 1)) + 128
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def _blur(img: np.ndarray, shift: float) -> np.ndarray:
    """(3, S, S) float: a 3x3 box blur mixed in with weight `shift` (a web thumbnail's softness)."""
    padded = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    s = img.shape[-1]
    box = sum(padded[:, i:i + s, j:j + s] for i in range(3) for j in range(3)) / 9
    return (1 - shift) * img + shift * box
