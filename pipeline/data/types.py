"""The prepared-data format shared by every stage: task splits and the caption corpus.

On disk a task is a directory holding ``task.json`` (name, class texts, prompt templates) and
``train.safetensors`` / ``test.safetensors`` (keys ``images`` uint8 (N, 3, H, W) and ``labels`` int64 (N,)).
Images read from disk (folder, mtil) are not copied there: a split's file then holds the labels alone and
``<split>.images.json`` describes the image source that decodes them on demand (pipeline/data/sources.py).
A corpus is ``corpus.safetensors`` (key ``images``) plus ``captions.json`` (a list of strings); its images
may likewise be a source, described by ``corpus.images.json``.
Tensors go through safetensors so loading never unpickles; every write is atomic (temp file in the same
directory, then ``os.replace``) so a killed stage never leaves a half-written file behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline import io
from pipeline.errors import InputError
from .sources import ImageSource, from_description

Images = torch.Tensor | ImageSource  # in memory (embedded benchmarks) or decoded on demand (read from disk)

TASK_JSON = "task.json"
CORPUS_TENSORS = "corpus.safetensors"
CAPTIONS_JSON = "captions.json"
SPLITS = ("train", "test")


def _check_images(images: Images, what: str) -> None:
    if not isinstance(images, (torch.Tensor, ImageSource)) or images.dtype != torch.uint8 or images.ndim != 4 \
            or images.shape[1] != 3:
        raise ValueError(f"{what}: expected a uint8 tensor of shape (N, 3, H, W), got "
                         f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}")


def _check_labels(labels: torch.Tensor, n: int, num_classes: int, what: str) -> None:
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
        raise ValueError(f"{what}: expected an int64 tensor of shape ({n},), got "
                         f"{getattr(labels, 'dtype', type(labels))} {tuple(getattr(labels, 'shape', ()))}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{what}: values must lie in [0, {num_classes}), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")


# eq=False: field-wise == on tensors is ambiguous, so equality (and hashing) stay by identity.
@dataclass(frozen=True, eq=False)
class TaskData:
    """One classification task: class texts, prompt templates and uint8 image splits (tensors or sources)."""

    name: str
    classes: list[str]
    templates: list[str]
    train_images: Images
    train_labels: torch.Tensor
    test_images: Images
    test_labels: torch.Tensor

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must be non-empty")
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: must be non-empty and distinct, got {self.classes!r}")
        if not self.templates or any(t.count("{}") != 1 for t in self.templates):
            raise ValueError(f"templates: need at least one, each with exactly one '{{}}', got {self.templates!r}")
        _check_images(self.train_images, "train_images")
        _check_images(self.test_images, "test_images")
        if self.train_images.shape[2:] != self.test_images.shape[2:]:
            raise ValueError(f"test_images: size {tuple(self.test_images.shape[2:])} differs from "
                             f"train_images size {tuple(self.train_images.shape[2:])}")
        _check_labels(self.train_labels, len(self.train_images), len(self.classes), "train_labels")
        _check_labels(self.test_labels, len(self.test_images), len(self.classes), "test_labels")

    def prompts(self) -> list[list[str]]:
        """Per class, every template filled with the class text (replace, not format: other braces stay)."""
        return [[t.replace("{}", c) for t in self.templates] for c in self.classes]


@dataclass(frozen=True, eq=False)
class CaptionCorpus:
    """Image-caption pairs used to pretrain E0 contrastively."""

    images: Images
    captions: list[str]

    def __post_init__(self) -> None:
        _check_images(self.images, "images")
        if len(self.captions) != len(self.images) or not all(isinstance(c, str) for c in self.captions):
            raise ValueError(f"captions: need one string per image ({len(self.images)}), got {len(self.captions)}")


def _read_tensors(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    tensors = io.load_tensors(path)
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise InputError(f"{path}: missing key(s) {missing}, found {sorted(tensors)}")
    return tensors


def _source_file(tensors: Path) -> Path:
    return tensors.with_suffix(".images.json")


def _save_images(path: Path, images: Images, **tensors: torch.Tensor) -> None:
    """`images` into the safetensors file at `path` beside `tensors`, or, for a source, its description
    into ``<stem>.images.json`` (module docstring)."""
    if isinstance(images, ImageSource):
        io.write_json(_source_file(path), images.describe())
    else:
        tensors = {"images": images, **tensors}
    io.save_tensors(path, tensors)


def _load_images(path: Path, tensors: dict[str, torch.Tensor]) -> Images:
    source = _source_file(path)
    if source.is_file():
        return from_description(io.read_json(source), str(source))
    if "images" not in tensors:
        raise InputError(f"{path}: missing key 'images' (and no {source.name} beside it)")
    return tensors["images"]


def save_task(task: TaskData, directory: Path) -> None:
    """Write ``task.json`` and the two split files; the JSON goes last so it marks a complete task."""
    directory = Path(directory)
    _save_images(directory / "train.safetensors", task.train_images, labels=task.train_labels)
    _save_images(directory / "test.safetensors", task.test_images, labels=task.test_labels)
    io.write_json(directory / TASK_JSON, {"name": task.name, "classes": list(task.classes),
                                        "templates": list(task.templates),
                                        "num_train": len(task.train_labels), "num_test": len(task.test_labels)})


def load_task(directory: Path) -> TaskData:
    """Read a task written by :func:`save_task`; errors name the offending file or key."""
    directory = Path(directory)
    meta_path = directory / TASK_JSON
    meta = io.read_json(meta_path)
    if not isinstance(meta, dict):
        raise InputError(f"{meta_path}: expected a JSON object")
    for key, kind in (("name", str), ("classes", list), ("templates", list)):
        if not isinstance(meta.get(key), kind):
            raise InputError(f"{meta_path}: key '{key}' missing or not a {kind.__name__}")
    splits = {s: _read_tensors(directory / f"{s}.safetensors", ("labels",)) for s in SPLITS}
    images = {s: _load_images(directory / f"{s}.safetensors", splits[s]) for s in SPLITS}
    try:
        return TaskData(name=meta["name"], classes=meta["classes"], templates=meta["templates"],
                        train_images=images["train"], train_labels=splits["train"]["labels"],
                        test_images=images["test"], test_labels=splits["test"]["labels"])
    except ValueError as e:
        raise InputError(f"{directory}: invalid task data: {e}") from e


def save_corpus(corpus: CaptionCorpus, directory: Path) -> None:
    directory = Path(directory)
    _save_images(directory / CORPUS_TENSORS, corpus.images)
    io.write_json(directory / CAPTIONS_JSON, list(corpus.captions))


def load_corpus(directory: Path, needed_by: str | None = None) -> CaptionCorpus:
    """Read a corpus written by :func:`save_corpus`. A corpus may be empty (a folder benchmark with no
    pretraining set, where nothing reads it); ``needed_by`` (the params key of the reader) makes that an
    error, e.g. when the pretraining set appeared after `prepare` ran."""
    directory = Path(directory)
    images = _load_images(directory / CORPUS_TENSORS, io.load_tensors(directory / CORPUS_TENSORS))
    captions = io.read_json(directory / CAPTIONS_JSON)
    if not isinstance(captions, list):
        raise InputError(f"{directory / CAPTIONS_JSON}: expected a JSON list of strings")
    try:
        corpus = CaptionCorpus(images=images, captions=captions)
    except ValueError as e:
        raise InputError(f"{directory}: invalid corpus data: {e}") from e
    if needed_by and not corpus.captions:
        raise InputError(f"{directory}: caption corpus is empty, but {needed_by} needs image-caption pairs; "
                         f"run prepare again (folder benchmark: <root>/pretrain/ or data.pretrain_on_tasks)")
    return corpus
