"""ZSCL's reference set as published (pipeline/data/reference.py): no task's class names, no task's generator,
captions unpaired with the images; the defaults run ZSCL with it and with its weight ensemble."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.params import Params
from pipeline.data import domains, facets
from pipeline.data.domains import DOMAINS
from pipeline.data.reference import CLASSES, build_reference, load_reference, sample_captions, save_reference
from pipeline.data.streams import stream_rng
from pipeline.errors import InputError

SIZE = 16


def _task_class_names() -> set[str]:
    """Every class name of every task of the embedded benchmarks (domains and facets)."""
    names = {c for d in DOMAINS.values() for c in d.classes}
    return names | {c for f in facets.FACETS for c in f.classes}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9-]+", text.lower()))


def test_no_task_class_name_in_the_reference_captions():
    ref = build_reference(image_size=SIZE, images=4, captions=1000, seed=0)
    assert len(ref.captions) == 1000 and len(set(ref.captions)) == 1000
    words = set().union(*map(_words, ref.captions))
    for name in _task_class_names():
        # Whole names (e.g. "lake or sea", "A-300") and every word of them but the joining ones ("or").
        assert not re.search(rf"\b{re.escape(name.lower())}\b", " ".join(ref.captions).lower()), name
        assert not (_words(name) - {"or", "the", "a"}) & words, name
    assert not set(CLASSES) & _task_class_names()  # the reference domain's own classes are no task's


def test_no_reference_image_is_drawn_from_a_task_generator(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a task's generator was called")

    for name, domain in list(DOMAINS.items()):
        monkeypatch.setitem(DOMAINS, name, domain.__class__(**{**domain.__dict__, "sample": refuse}))
    monkeypatch.setattr(facets, "render_world", refuse)
    monkeypatch.setattr(domains, "build_domain_task", refuse)
    ref = build_reference(image_size=SIZE, images=64, captions=8, seed=0)
    assert ref.images.shape == (64, 3, SIZE, SIZE) and ref.images.dtype == torch.uint8
    # ... and no reference image equals an image of a task or of E0's corpus (different streams, generator).
    monkeypatch.undo()
    task = domains.build_domain_task("shapes", image_size=SIZE, train_per_class=4, test_per_class=2, seed=0)
    assert not (ref.images[:, None] == task.train_images[None]).flatten(2).all(-1).any()


def test_captions_are_unpaired_and_seeded():
    a = build_reference(image_size=SIZE, images=10, captions=7, seed=0)
    assert len(a.images) == 10 and len(a.captions) == 7  # a pool, not one caption per image
    b = build_reference(image_size=SIZE, images=10, captions=7, seed=0)
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    c = build_reference(image_size=SIZE, images=10, captions=7, seed=1)
    assert not torch.equal(a.images, c.images) and a.captions != c.captions
    # The captions come from their own stream: the images' count does not change them.
    assert build_reference(image_size=SIZE, images=3, captions=7, seed=0).captions == a.captions
    assert sample_captions(7, stream_rng(0, "reference", "captions")) == a.captions


def test_reference_set_round_trip_and_bad_files(tmp_path):
    ref = build_reference(image_size=SIZE, images=5, captions=4, seed=0)
    save_reference(ref, tmp_path / "ref")
    back = load_reference(tmp_path / "ref", needed_by="train.method: zscl")
    assert torch.equal(back.images, ref.images) and back.captions == ref.captions
    with pytest.raises(InputError, match=r"no reference set, which train.method: zscl reads"):
        load_reference(tmp_path / "missing", needed_by="train.method: zscl")
    (tmp_path / "ref" / "captions.json").write_text('["one caption"]')
    with pytest.raises(InputError, match="needs at least 2"):
        load_reference(tmp_path / "ref", needed_by="train.method: zscl")


def test_defaults_run_zscl_as_published():
    params = Params.load()
    assert params.loss.zscl_reference == "reference"
    # ZSCL's scripts average every 100 of 1000 iterations: a tenth of the task's steps.
    assert params.loss.zscl_ensemble_every * 10 == params.train.steps
    raw = yaml.safe_load(Path("params.yaml").read_text())
    assert raw["loss"]["zscl_reference"] == "reference"
