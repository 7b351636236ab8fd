"""The ``folder`` benchmark: users' own image data, one directory per task.

Layout of a task directory::

    task_dir/
      classnames.txt        optional, see below
      train/<class_folder>/<image files>
      test/<class_folder>/<image files>

Classes are the sub-directories of ``train/`` in sorted order; ``test/`` must have the same set. The class
text used in prompts is the folder name with ``_`` and ``-`` turned into spaces, unless ``classnames.txt``
overrides it: one ``folder_name: class text`` line per class to rename (blank lines and lines starting
with ``#`` are ignored; folders not listed keep the default text; a line naming an unknown folder is an
error). Image files are those with an extension PIL registers (jpg, png, webp, ...); hidden files and other
files are skipped. Each image is converted to RGB, its shorter side resized to ``image_size`` and centre
cropped to a square, as uint8. Images stay in their files: a task holds an image source that decodes them on
demand (pipeline/data/sources.py), each file decoded once while preparing so a bad one fails there. E0's pretraining set, ``<root>/pretrain/``, is read by
``folder_pretrain`` (class folders through :func:`build_class_folder_corpus`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline import io
from pipeline.errors import InputError, MissingInput
from . import loader
from .images import image_extensions
from .sources import FileImages, concat
from .types import SPLITS, CaptionCorpus, TaskData

CLASSNAMES_FILE = "classnames.txt"


def _class_dirs(split_dir: Path) -> list[Path]:
    if not split_dir.is_dir():
        raise MissingInput(f"{split_dir}: split directory not found")
    dirs = sorted((p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: p.name)
    if not dirs:
        raise InputError(f"{split_dir}: no class sub-directories")
    return dirs


def _image_files(class_dir: Path, extensions: set[str]) -> list[Path]:
    files = sorted(p for p in class_dir.iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions)
    if not files:
        raise InputError(f"{class_dir}: class folder has no image files")
    return files


def _class_texts(task_dir: Path, folders: list[str]) -> list[str]:
    texts = {f: f.replace("_", " ").replace("-", " ").strip() for f in folders}
    path = task_dir / CLASSNAMES_FILE
    if path.is_file():
        for lineno, line in enumerate(io.read_utf8(path).splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            folder, sep, text = line.partition(":")
            folder, text = folder.strip(), text.strip()
            if not sep or not text:
                raise InputError(f"{path}:{lineno}: expected 'folder_name: class text', got {line!r}")
            if folder not in texts:
                raise InputError(f"{path}:{lineno}: unknown class folder {folder!r}; known: {folders}")
            texts[folder] = text
    out = [texts[f] for f in folders]
    if len(set(out)) != len(out):
        raise InputError(f"{task_dir}: class texts are not distinct: {out}")
    return out


def _scan(task_dir: Path) -> tuple[list[str], dict[str, list[list[Path]]]]:
    """Class folder names and, per split, the image files of each class (same class order)."""
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise MissingInput(f"{task_dir}: task directory not found")
    extensions = image_extensions()
    dirs = {s: _class_dirs(task_dir / s) for s in SPLITS}
    folders = [d.name for d in dirs["train"]]
    test_folders = [d.name for d in dirs["test"]]
    if folders != test_folders:
        raise InputError(f"{task_dir}: train/ and test/ class folders differ: only in train "
                         f"{sorted(set(folders) - set(test_folders))}, only in test "
                         f"{sorted(set(test_folders) - set(folders))}")
    return folders, {s: [_image_files(d, extensions) for d in dirs[s]] for s in SPLITS}


def file_images(files: list[Path], image_size: int) -> FileImages:
    """``files`` in order as a source read by :func:`images.load_image` on demand (pipeline/data/sources.py), each
    decoded once here (``loader.check_decodes``) so a bad file fails while preparing, not training."""
    return loader.check_decodes(FileImages(files, image_size))


def _stack(files: list[list[Path]], image_size: int) -> tuple[FileImages, torch.Tensor]:
    labels = [label for label, class_files in enumerate(files) for _ in class_files]
    return file_images([p for class_files in files for p in class_files], image_size), \
        torch.tensor(labels, dtype=torch.int64)


def build_folder_task(task_dir: Path, *, name: str, image_size: int, templates: list[str]) -> TaskData:
    """Read one task directory (layout in the module docstring) into a :class:`TaskData`."""
    task_dir = Path(task_dir)
    folders, files = _scan(task_dir)
    train_x, train_y = _stack(files["train"], image_size)
    test_x, test_y = _stack(files["test"], image_size)
    return TaskData(name=name, classes=_class_texts(task_dir, folders), templates=list(templates),
                    train_images=train_x, train_labels=train_y, test_images=test_x, test_labels=test_y)


def _check_caption_args(templates: list[str], per_class: int | None) -> None:
    if not templates or any(t.count("{}") != 1 for t in templates):
        raise ValueError(f"templates: need at least one, each with exactly one '{{}}', got {templates!r}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class: must be >= 1 or None, got {per_class}")


def _captioned(texts: list[str], files: list[list[Path]], image_size: int, templates: list[str],
               per_class: int | None) -> tuple[FileImages, list[str]]:
    """The first ``per_class`` files of each class in sorted order (all when None), captioned by filling
    the templates with the class text, round-robin per class."""
    chosen = [class_files[:per_class] for class_files in files]
    captions = [templates[j % len(templates)].replace("{}", text)
                for text, class_files in zip(texts, chosen) for j in range(len(class_files))]
    return _stack(chosen, image_size)[0], captions


def build_class_folder_corpus(folder: Path, *, image_size: int, templates: list[str],
                              per_class: int | None) -> CaptionCorpus:
    """Class folders ``folder/<class>/<image files>`` (class texts as for a task, ``classnames.txt``
    included) captioned as :func:`build_folder_corpus` captions a task's training images."""
    _check_caption_args(templates, per_class)
    folder = Path(folder)
    extensions = image_extensions()
    dirs = _class_dirs(folder)
    files = [_image_files(d, extensions) for d in dirs]
    images, captions = _captioned(_class_texts(folder, [d.name for d in dirs]), files, image_size, templates,
                                  per_class)
    return CaptionCorpus(images=images, captions=captions)


def build_folder_corpus(root: Path, task_names: list[str], *, image_size: int, templates: list[str],
                        per_class: int | None) -> CaptionCorpus:
    """Train images of ``root/<task>`` for each task, captioned as in :func:`_captioned`."""
    _check_caption_args(templates, per_class)
    chunks, captions = [], []
    for name in task_names:
        task_dir = Path(root) / name
        folders, files = _scan(task_dir)
        images, task_captions = _captioned(_class_texts(task_dir, folders), files["train"], image_size,
                                           templates, per_class)
        chunks.append(images)
        captions += task_captions
    if not chunks:
        raise ValueError("task_names: need at least one task")
    return CaptionCorpus(images=concat(chunks), captions=captions)
