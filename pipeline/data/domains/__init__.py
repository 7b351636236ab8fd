"""The embedded default benchmark `domains`: six image domains, each a task, standing in for MTIL's data sets.

| task | stands for | classes | what tells the classes apart |
|---|---|---|---|
| shapes | Pets / Caltech101 (easy) | 5 | the outline of one large shape |
| digits | MNIST (real images) | 10 | handwritten digits (scikit-learn's 8x8 scans) |
| textures | DTD | 12 | a surface pattern |
| landuse | EuroSAT | 10 | land cover seen from above |
| flowers | Flowers102 (fine-grained) | 20 | petal count and colour |
| aircraft | FGVC-Aircraft (fine-grained) | 16 | wing plan, engine count, fuselage length |

Every domain has its own generator, class names and prompt templates (`base.Domain`); E0's caption corpus
covers all of them unevenly and noisily, with images drawn apart from the tasks' (see `base`)."""
from __future__ import annotations

import numpy as np
import torch

from ..types import CaptionCorpus, TaskData
# Import order is the registry's order, and the default task order: MTIL order I's relative order of the data
# sets these stand for (Aircraft, Caltech101, DTD, EuroSAT, Flowers, MNIST).
from . import aircraft, shapes, textures, landuse, flowers, digits  # noqa: F401, I001  (each registers itself)
from ..streams import stream_rng
from .base import DOMAINS, web_style


def domain_names() -> list[str]:
    """Task names of the benchmark, in the default task order."""
    return list(DOMAINS)


def _domain(name: str):
    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def build_domain_task(name: str, *, image_size: int, train_per_class: int, test_per_class: int, seed: int) -> TaskData:
    """Task `name`: its train and test splits from separate streams (and, for real images, separate pools)."""
    domain = _domain(name)
    k = len(domain.classes)
    train_x, train_y = domain.sample(np.full(k, train_per_class), "train", stream_rng(seed, name, "train"), image_size)
    test_x, test_y = domain.sample(np.full(k, test_per_class), "test", stream_rng(seed, name, "test"), image_size)
    return TaskData(name=name, classes=list(domain.classes), templates=list(domain.templates),
                    train_images=torch.from_numpy(train_x), train_labels=torch.from_numpy(train_y),
                    test_images=torch.from_numpy(test_x), test_labels=torch.from_numpy(test_y))


def corpus_counts(size: int) -> dict[str, int]:
    """Images of each domain in a corpus of `size`: proportional to the domains' shares (largest remainder)."""
    shares = np.array([d.corpus_share for d in DOMAINS.values()])
    exact = size * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: size - counts.sum()]] += 1
    return dict(zip(DOMAINS, counts.tolist()))


def build_domain_corpus(*, image_size: int, size: int, seed: int, templates: bool = False,
                        template_names: bool = True) -> CaptionCorpus:
    """`size` captioned "web" images covering every domain, from streams no task uses; `templates`: captions are
    worded as the tasks' prompt templates too (`data.corpus_templates`), with the class name in the slot or, with
    `template_names` false, only other words for it (`data.corpus_template_names`)."""
    images, captions = [], []
    for name, n in corpus_counts(size).items():
        domain, rng = DOMAINS[name], stream_rng(seed, name, "corpus")
        per_class = np.full(len(domain.classes), n // len(domain.classes))
        per_class[: n % len(domain.classes)] += 1
        x, y = domain.sample(per_class, "corpus", rng, image_size)
        images.append(web_style(x, rng, domain.look_shift))
        captions += [domain.caption(int(label), rng, templates, template_names) for label in y]
    return CaptionCorpus(images=torch.from_numpy(np.concatenate(images)), captions=captions)
