"""The `domains` benchmark: six distinct image domains standing in for MTIL's data sets."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.data.domains import DOMAINS, build_domain_corpus, build_domain_task, corpus_counts, domain_names
from pipeline.data.domains import digits as digits_domain
from pipeline.data.streams import stream_rng

SMALL = dict(image_size=32, train_per_class=4, test_per_class=3, seed=5)


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


@pytest.fixture(scope="module")
def tasks():
    return {name: build_domain_task(name, **SMALL) for name in domain_names()}


def test_mtil_like_shape_of_the_benchmark(tasks):
    sizes = {name: len(task.classes) for name, task in tasks.items()}
    assert len(sizes) >= 6
    assert min(sizes.values()) <= 5 and max(sizes.values()) >= 20  # a few classes to 20 or more
    assert len(set(sizes.values())) >= 4  # class counts differ between tasks
    # Each domain has its own prompt templates and class names: no template or class text is shared.
    templates = [t for task in tasks.values() for t in task.templates]
    assert len(templates) == len(set(templates))
    classes = [c for task in tasks.values() for c in task.classes]
    assert len(classes) == len(set(classes))
    # ... and its own generator: no two domains share a sampling function.
    assert len({d.sample for d in DOMAINS.values()}) == len(DOMAINS)


def test_generators_are_deterministic_and_seeded(tasks):
    for name, task in tasks.items():
        again = build_domain_task(name, **SMALL)
        assert torch.equal(task.train_images, again.train_images) and torch.equal(task.test_labels, again.test_labels)
        other = build_domain_task(name, **{**SMALL, "seed": 6})
        assert not torch.equal(task.train_images, other.train_images), name


def test_splits_have_the_requested_sizes(tasks):
    for name, task in tasks.items():
        k = len(task.classes)
        assert torch.equal(torch.bincount(task.train_labels, minlength=k), torch.full((k,), SMALL["train_per_class"]))
        assert torch.equal(torch.bincount(task.test_labels, minlength=k), torch.full((k,), SMALL["test_per_class"]))
        assert task.train_images.shape[1:] == (3, 32, 32) and task.train_images.dtype == torch.uint8


def test_domains_tests_and_corpus_share_no_image(tasks):
    corpus = build_domain_corpus(image_size=32, size=300, seed=SMALL["seed"])
    seen = _rows(corpus.images)
    for task in tasks.values():
        for split in (task.train_images, task.test_images):
            rows = _rows(split)
            assert not rows & seen
            seen |= rows


def test_real_digits_pools_are_disjoint():
    _, pools = digits_domain._pools()
    for c in range(10):
        parts = [set(pools[p][c].tolist()) for p in ("train", "test", "corpus")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert min(len(p) for p in parts) >= 40
    # The test split never repeats an image: asking for more than the pool holds gives the pool, once each.
    task = build_domain_task("digits", image_size=32, train_per_class=200, test_per_class=500, seed=0)
    assert len(_rows(task.test_images)) == len(task.test_images) == sum(digits_domain.available("test"))
    assert len(task.train_labels) == 2000  # train draws again, shifted


@pytest.mark.parametrize("name", [n for n in domain_names() if n != "digits"])
def test_every_class_is_visible(name):
    """With the nuisances drawn alike (the same stream for every class), every class gives its own image: the
    class, and not only the noise, decides what is drawn."""
    domain = DOMAINS[name]
    k = len(domain.classes)
    images = []
    for c in range(k):
        counts = np.zeros(k, np.int64)
        counts[c] = 1
        x, y = domain.sample(counts, "test", stream_rng(0, "visible"), 32)
        assert y.tolist() == [c]
        images.append(x[0].astype(np.float32))
    for a in range(k):
        for b in range(a + 1, k):
            # Fine-grained classes differ in small details: a few clearly different pixels are enough.
            changed = int((np.abs(images[a] - images[b]).max(axis=0) > 60).sum())
            assert changed >= 4, f"{name}: {domain.classes[a]!r} and {domain.classes[b]!r} look the same"


def test_corpus_covers_every_domain_unevenly_with_noisy_captions():
    counts = corpus_counts(2000)
    assert sum(counts.values()) == 2000 and set(counts) == set(DOMAINS)
    assert len(set(counts.values())) > 1  # uneven amounts per domain
    corpus = build_domain_corpus(image_size=32, size=2000, seed=0)
    assert len(corpus.captions) == 2000 and corpus.images.shape == (2000, 3, 32, 32)
    start = 0
    for name, n in counts.items():
        domain = DOMAINS[name]
        captions = corpus.captions[start : start + n]
        start += n
        named = np.mean([any(c.lower() in cap.lower() for c in domain.classes) for cap in captions])
        # Only part of a domain's captions use a class name (some descriptions contain one by chance: 'one').
        assert 0.5 * domain.name_rate < named < domain.name_rate + 0.3, (name, named)
        assert any(cap in domain.generic for cap in captions)  # captions that say nothing of the class


def test_the_corpus_phrases_captions_in_the_tasks_templates_only_when_asked():
    """`data.corpus_templates`: E0's corpus then holds captions worded as the tasks' prompts (a template with a
    class name or a description in its slot); without it, no caption has a template's wording."""
    def worded_as_templates(captions: list[str], domain) -> int:
        heads = [t.split("{}")[0] for t in domain.templates if t.split("{}")[0] not in
                 [f.split("{}")[0] for f in domain.caption_forms]]  # the wording a template alone has
        return sum(any(cap.startswith(h) for h in heads) for cap in captions)

    plain = build_domain_corpus(image_size=16, size=600, seed=0)
    phrased = build_domain_corpus(image_size=16, size=600, seed=0, templates=True)
    digits = DOMAINS["digits"]
    assert worded_as_templates(plain.captions, digits) == 0
    assert worded_as_templates(phrased.captions, digits) > 0  # 'a photo of the number: "4".'
    assert torch.equal(plain.images, phrased.images)  # the images are the same draw
    prompts = {t.replace("{}", c) for d in DOMAINS.values() for t in d.templates if t not in d.caption_forms
               for c in d.classes}  # "a photo of a {}." is a caption form of its own too
    assert prompts & set(phrased.captions)  # the prompts themselves, class names in the slot
    wording = build_domain_corpus(image_size=16, size=600, seed=0, templates=True, template_names=False)
    assert worded_as_templates(wording.captions, digits) > 0 and not prompts & set(wording.captions)


def test_a_domains_look_shift_moves_its_corpus_images_only(monkeypatch):
    """`look_shift`: the shifted domain's corpus images are softer and further from what was drawn (a blur, deeper
    zooms, a colour cast), from the same draw of classes and captions; every other domain's corpus is untouched,
    so a domain is calibrated alone."""
    import dataclasses

    from pipeline.data.domains.base import web_style

    x = build_domain_task("landuse", image_size=32, train_per_class=6, test_per_class=1, seed=0).train_images.numpy()
    plain, shifted = (web_style(x, np.random.default_rng(1), s).astype(np.float32) for s in (0.0, 1.0))
    assert np.abs(shifted - x).mean() > np.abs(plain - x).mean()  # further from the image drawn
    edges = lambda im: np.abs(np.diff(im, axis=-1)).mean()  # noqa: E731
    assert edges(shifted) < 0.8 * edges(plain)  # and softer
    before = build_domain_corpus(image_size=16, size=600, seed=0)
    monkeypatch.setitem(DOMAINS, "landuse", dataclasses.replace(DOMAINS["landuse"], look_shift=1.0))
    after = build_domain_corpus(image_size=16, size=600, seed=0)
    start = 0
    for name, n in corpus_counts(600).items():
        same = torch.equal(before.images[start : start + n], after.images[start : start + n])
        assert same == (name != "landuse"), name
        start += n
    with pytest.raises(ValueError, match="domain landuse: look_shift 1.5 is outside 0..1"):
        dataclasses.replace(DOMAINS["landuse"], look_shift=1.5)


def test_unknown_domain():
    with pytest.raises(ValueError, match="unknown domain 'cars'"):
        build_domain_task("cars", **SMALL)


@pytest.mark.parametrize("label", ["grid", "crosshatched", "marbled"])
def test_line_textures_stay_drawn_at_any_frequency_and_angle(label):
    """Line textures keep lines at least 1.5 pixels wide: at the highest frequency and any angle, a fair share
    of pixels is line (a fixed |sin| threshold drew lines thinner than a pixel, which fell apart into dashes)."""
    from pipeline.data.domains import textures
    from pipeline.data.domains.base import grid, rotate

    gx, gy = grid(32)
    rng = np.random.default_rng(0)
    for angle in np.linspace(0, np.pi, 7):
        x, y = rotate(gx, gy, angle)
        share = textures._pattern(textures.CLASSES.index(label), x, y, 4.5, rng).mean()
        assert share > 0.25, (label, angle, share)
