"""Tests of pipeline.data: the facet world, the on-disk format and the folder benchmark."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import InputError
from pipeline.data import CaptionCorpus, TaskData, load_corpus, load_task, save_corpus, save_task
from pipeline.data.facets import FACETS, build_facet_corpus, build_facet_task, caption, facet_names, render_world
from pipeline.data.folder import build_folder_corpus, build_folder_task

SMALL = dict(image_size=32, train_per_class=6, test_per_class=4, seed=3)
BASE = {"shape": 0, "colour": 0, "fill": 0, "count": 0, "size": 2, "background": 0}  # one large solid red circle


def _rows(images: torch.Tensor) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images}


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit class means on even items, score odd items (features standardised so none dominates)."""
    f = (features - features.mean(0)) / (features.std(0) + 1e-6)
    fit, ev = np.arange(len(f)) % 2 == 0, np.arange(len(f)) % 2 == 1
    classes = np.unique(labels)
    means = np.stack([f[fit & (labels == c)].mean(0) for c in classes])
    pred = classes[((f[ev][:, None, :] - means[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == labels[ev]).mean())


def _render_varying(facet: str, per_class: int = 24, seed: int = 0):
    """Images where only ``facet`` varies (others fixed to BASE); nuisances stay random."""
    n_cls = len(next(f for f in FACETS if f.name == facet).classes)
    labels = np.repeat(np.arange(n_cls), per_class)
    attrs = {k: np.full(len(labels), v) for k, v in BASE.items()}
    attrs[facet] = labels
    images, fg = render_world(attrs, 32, np.random.default_rng(seed))
    return images.astype(np.float32), fg, labels


def _components(mask: np.ndarray) -> int:
    seen, n = np.zeros_like(mask), 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        n += 1
        queue = deque([(y, x)])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
    return n


def _bbox_grid(mask: np.ndarray, k: int = 12) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    gy = np.linspace(ys.min(), ys.max(), k).round().astype(int)
    gx = np.linspace(xs.min(), xs.max(), k).round().astype(int)
    return mask[np.ix_(gy, gx)].astype(np.float32).ravel()


# ---------------------------------------------------------------- facet world


def test_facets_classes_and_templates():
    names = facet_names()
    assert len(names) >= 6 and len(set(names)) == len(names)
    words = [c for f in FACETS for c in f.classes]
    assert len(words) == len(set(words)), "class words must not repeat across facets"
    templates = [t for f in FACETS for t in f.templates]
    assert len(templates) == len(set(templates))
    for f in FACETS:
        assert 2 <= len(f.templates) <= 4 and all(t.count("{}") == 1 for t in f.templates)


def test_task_shapes_balance_and_determinism():
    for name in facet_names():
        task = build_facet_task(name, **SMALL)
        again = build_facet_task(name, **SMALL)
        k = len(task.classes)
        assert task.train_images.shape == (6 * k, 3, 32, 32) and task.train_images.dtype == torch.uint8
        assert task.test_images.shape == (4 * k, 3, 32, 32) and task.test_labels.dtype == torch.int64
        assert torch.bincount(task.train_labels, minlength=k).tolist() == [6] * k
        assert torch.bincount(task.test_labels, minlength=k).tolist() == [4] * k
        for a, b in ((task.train_images, again.train_images), (task.train_labels, again.train_labels),
                     (task.test_images, again.test_images), (task.test_labels, again.test_labels)):
            assert torch.equal(a, b)
        assert len(task.prompts()) == k and task.prompts()[0][0] == task.templates[0].replace("{}", task.classes[0])
    other = build_facet_task("shape", **{**SMALL, "seed": 4})
    assert not torch.equal(other.train_images, build_facet_task("shape", **SMALL).train_images)


def test_streams_are_disjoint():
    tasks = [build_facet_task(n, **SMALL) for n in facet_names()]
    corpus = build_facet_corpus(image_size=32, size=50, seed=3)
    seen: set[bytes] = _rows(corpus.images)
    for t in tasks:
        train, test = _rows(t.train_images), _rows(t.test_images)
        assert len(train) == len(t.train_images) and not train & test
        assert not (train | test) & seen, f"task {t.name} shares images with another stream"
        seen |= train | test


def test_image_sizes_and_bad_arguments():
    for size in (24, 41):
        task = build_facet_task("count", image_size=size, train_per_class=2, test_per_class=1, seed=0)
        assert task.train_images.shape[1:] == (3, size, size)
    with pytest.raises(ValueError, match="image_size"):
        build_facet_task("count", image_size=16, train_per_class=2, test_per_class=1, seed=0)
    with pytest.raises(ValueError, match="unknown facet task"):
        build_facet_task("texture", image_size=32, train_per_class=2, test_per_class=1, seed=0)


def test_each_facet_is_visible():
    imgs, fg, y = _render_varying("colour")
    feats = np.stack([imgs[i][:, fg[i]].mean(1) for i in range(len(y))])
    assert _nearest_centroid_accuracy(feats, y) >= 0.95

    imgs, fg, y = _render_varying("background")
    feats = np.stack([np.concatenate([imgs[i][:, ~fg[i]].mean(1), imgs[i][:, :4].mean((1, 2)),
                                      imgs[i][:, -4:].mean((1, 2)), imgs[i][:, ~fg[i]].std(1)])
                      for i in range(len(y))])
    assert _nearest_centroid_accuracy(feats, y) >= 0.95

    imgs, fg, y = _render_varying("size")
    assert _nearest_centroid_accuracy(fg.sum((1, 2))[:, None].astype(float), y) == 1.0

    imgs, fg, y = _render_varying("count", per_class=6)
    assert [_components(m) for m in fg] == (y + 1).tolist()

    imgs, fg, y = _render_varying("shape")
    assert _nearest_centroid_accuracy(np.stack([_bbox_grid(m) for m in fg]), y) >= 0.95

    imgs, fg, y = _render_varying("fill")
    feats = []
    for m in fg:
        ys, xs = np.nonzero(m)
        box = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        feats.append([box.mean(), (box[:, 1:] & box[:, :-1]).sum() / box.sum(),
                      (box[1:] & box[:-1]).sum() / box.sum()])
    assert _nearest_centroid_accuracy(np.array(feats), y) >= 0.95


def test_task_labels_drive_pixels():
    # Border pixels are never covered by an object, so they show the background class directly.
    task = build_facet_task("background", image_size=32, train_per_class=20, test_per_class=20, seed=0)
    x = torch.cat([task.train_images, task.test_images]).float()
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    feats = torch.cat([border.mean(2), border.std(2)], 1).numpy()
    labels = torch.cat([task.train_labels, task.test_labels]).numpy()
    assert _nearest_centroid_accuracy(feats, labels) >= 0.95


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{word}(e?s)?\b", text) is not None


def test_captions_use_the_true_class_words():
    rng = np.random.default_rng(0)
    full = 0
    for _ in range(400):
        a = {f.name: int(rng.integers(len(f.classes))) for f in FACETS}
        text = caption(a, rng)
        named = [f.name for f in FACETS if _mentions(text, f.classes[a[f.name]])]
        wrong = [c for f in FACETS for i, c in enumerate(f.classes) if i != a[f.name] and _mentions(text, c)]
        assert not wrong, (text, a)
        assert named, text
        full += len(named) == len(FACETS)
    assert 0.35 <= full / 400 <= 0.8


def test_corpus_shapes_determinism_and_vocabulary():
    corpus = build_facet_corpus(image_size=32, size=300, seed=1)
    again = build_facet_corpus(image_size=32, size=300, seed=1)
    assert corpus.images.shape == (300, 3, 32, 32) and corpus.images.dtype == torch.uint8
    assert torch.equal(corpus.images, again.images) and corpus.captions == again.captions
    assert len(set(corpus.captions)) > 200
    for f in FACETS:
        for c in f.classes:
            assert any(_mentions(t, c) for t in corpus.captions), c
    # ~20% of captions are a task prompt verbatim, so zero-shot prompts are in distribution
    filled = {t.replace("{}", c) for f in FACETS for t in f.templates for c in f.classes}
    assert sum(any(text.startswith(p) for p in filled) for text in corpus.captions) >= 20


# ---------------------------------------------------------------- on-disk format


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]


def test_task_round_trip_and_errors(tmp_path):
    task = build_facet_task("fill", **SMALL)
    save_task(task, tmp_path / "fill")
    assert sorted(p.name for p in (tmp_path / "fill").iterdir()) == ["task.json", "test.safetensors",
                                                                      "train.safetensors"]
    back = load_task(tmp_path / "fill")
    assert (back.name, back.classes, back.templates) == (task.name, task.classes, task.templates)
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(back, field), getattr(task, field))
    save_task(task, tmp_path / "fill")  # overwriting goes through temp files too
    assert _no_temp_files(tmp_path / "fill")

    (tmp_path / "fill" / "test.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="test.safetensors"):
        load_task(tmp_path / "fill")
    (tmp_path / "fill" / "test.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="test.safetensors"):
        load_task(tmp_path / "fill")
    (tmp_path / "fill" / "task.json").write_text("{broken")
    with pytest.raises(ValueError, match="task.json"):
        load_task(tmp_path / "fill")


def test_corpus_round_trip(tmp_path):
    corpus = build_facet_corpus(image_size=24, size=20, seed=0)
    save_corpus(corpus, tmp_path)
    back = load_corpus(tmp_path)
    assert torch.equal(back.images, corpus.images) and back.captions == corpus.captions
    assert _no_temp_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="corpus.safetensors"):
        load_corpus(tmp_path / "missing")


def test_dataclasses_validate():
    x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="train_labels"):
        TaskData("t", ["a", "b"], ["{}."], x, torch.tensor([0, 2]), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="templates"):
        TaskData("t", ["a", "b"], ["no slot"], x, torch.tensor([0, 1]), x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="captions"):
        CaptionCorpus(x, ["only one"])


# ---------------------------------------------------------------- folder benchmark


def _write_png(path: Path, rgb: tuple[int, int, int], size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def _tree(root: Path) -> Path:
    colours = {"red_apple": (200, 0, 0), "green-pear": (0, 200, 0)}
    for split, n in (("train", 3), ("test", 2)):
        for folder, rgb in colours.items():
            for i in range(n):
                _write_png(root / split / folder / f"{i}.png", rgb)
    (root / "train" / "red_apple" / "notes.txt").write_text("not an image, skipped")
    return root


def test_folder_task(tmp_path):
    root = _tree(tmp_path / "fruit")
    task = build_folder_task(root, name="fruit", image_size=16, templates=["a photo of a {}."])
    assert task.classes == ["green pear", "red apple"]  # sorted folder names, '_'/'-' -> space
    assert task.train_images.shape == (6, 3, 16, 16) and task.test_images.shape == (4, 3, 16, 16)
    assert task.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert task.train_images[0, 1].float().mean() > 150 and task.train_images[-1, 0].float().mean() > 150

    (root / "classnames.txt").write_text("# renames\nred_apple: ripe apple\n")
    assert build_folder_task(root, name="fruit", image_size=16, templates=["{}"]).classes == \
        ["green pear", "ripe apple"]
    (root / "classnames.txt").write_text("banana: yellow fruit\n")
    with pytest.raises(ValueError, match="classnames.txt"):
        build_folder_task(root, name="fruit", image_size=16, templates=["{}"])
    (root / "classnames.txt").write_bytes("red_apple: pomme rôtie\n".encode("latin-1"))
    with pytest.raises(InputError, match=re.escape(str(root / "classnames.txt")) + ": not UTF-8 text"):
        build_folder_task(root, name="fruit", image_size=16, templates=["{}"])


def test_folder_errors(tmp_path):
    root = _tree(tmp_path / "fruit")
    bad = root / "test" / "red_apple" / "broken.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        build_folder_task(root, name="fruit", image_size=16, templates=["{}"])
    bad.unlink()

    (root / "test" / "plum").mkdir()
    with pytest.raises(ValueError, match="plum"):
        build_folder_task(root, name="fruit", image_size=16, templates=["{}"])
    (root / "train" / "plum").mkdir()
    with pytest.raises(ValueError, match=re.escape(str(root / "train" / "plum"))):
        build_folder_task(root, name="fruit", image_size=16, templates=["{}"])

    other = _tree(tmp_path / "other")
    for p in (other / "test").rglob("*.png"):
        p.unlink()
    for d in sorted((other / "test").iterdir()):
        d.rmdir()
    (other / "test").rmdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(other / "test"))):
        build_folder_task(other, name="other", image_size=16, templates=["{}"])


def test_folder_corpus(tmp_path):
    _tree(tmp_path / "fruit")
    _tree(tmp_path / "more")
    corpus = build_folder_corpus(tmp_path, ["fruit", "more"], image_size=12,
                                 templates=["a photo of a {}.", "a {}."], per_class=2)
    assert corpus.images.shape == (8, 3, 12, 12)
    assert corpus.captions[:4] == ["a photo of a green pear.", "a green pear.",
                                   "a photo of a red apple.", "a red apple."]
    full = build_folder_corpus(tmp_path, ["fruit"], image_size=12, templates=["{}"], per_class=None)
    assert len(full.captions) == 6
