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

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline import io
from pipeline.errors import InputError, MissingInput
from . import loader
from .sources import FileImages, concat
from .types import SPLITS, CaptionCorpus, TaskData

CLASSNAMES_FILE = "classnames.txt"


def _image_extensions() -> set[str]:
    Image.init()  # registers every plugin so the extension table is complete
    return {ext.lower() for ext in Image.registered_extensions()}


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


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB by the image's own range. PIL's convert("RGB") clips 16- and 32-bit greyscale (modes I;16, I) at
    255, which turns a 16-bit scan almost white: those are scaled from their type's range (65535 for 16-bit
    data, which PIL may also open as mode I) instead. Float images (mode F) have no such range: refused."""
    if im.mode == "F":
        raise ValueError("32-bit float image: save it with 8 or 16 bits per channel")
    if im.mode.startswith("I"):
        values = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or values.max() <= 65535 else float(2**31 - 1)
        grey = np.round(np.clip(values, 0, top) / top * 255.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return im.convert("RGB")


def load_image(path: Path, image_size: int) -> np.ndarray:
    """uint8 (3, S, S): RGB, shorter side resized to S, centre crop. Unreadable files raise ValueError. An
    image over PIL's decompression-bomb limit (~89 Mpx; twice that is PIL's error) is decoded, with one line
    naming it instead of PIL's two-line warning."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with Image.open(path) as im:
                im.load()  # a full decode, so truncated files fail here
                im = _to_rgb(im)
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... for bad files
        raise InputError(f"{path}: cannot read image ({e})") from e
    for w in caught:
        if issubclass(w.category, Image.DecompressionBombWarning):
            print(f"warning: {path}: {im_pixels(w)} decoded (over PIL's decompression-bomb limit of "
                  f"{Image.MAX_IMAGE_PIXELS} pixels)", file=sys.stderr)
        else:  # any other warning as it would have shown
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return fit_image(im, image_size)


def im_pixels(w: warnings.WarningMessage) -> str:
    """'144000000 pixels' from PIL's warning text ('Image size (144000000 pixels) exceeds limit ...')."""
    found = re.search(r"\((\d+) pixels\)", str(w.message))
    return f"{found.group(1)} pixels" if found else "a large image"


def fit_image(im: Image.Image, image_size: int) -> np.ndarray:
    """uint8 (3, S, S) of a decoded image: RGB by :func:`_to_rgb`, shorter side resized to S (bicubic),
    centre crop. Every benchmark read from disk (folder, mtil) goes through it, so their images match."""
    if im.mode != "RGB":  # load_image has converted already
        im = _to_rgb(im)
    w, h = im.size
    scale = image_size / min(w, h)
    nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
    im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - image_size) // 2, (nh - image_size) // 2
    im = im.crop((left, top, left + image_size, top + image_size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


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
    extensions = _image_extensions()
    dirs = {s: _class_dirs(task_dir / s) for s in SPLITS}
    folders = [d.name for d in dirs["train"]]
    test_folders = [d.name for d in dirs["test"]]
    if folders != test_folders:
        raise InputError(f"{task_dir}: train/ and test/ class folders differ: only in train "
                         f"{sorted(set(folders) - set(test_folders))}, only in test "
                         f"{sorted(set(test_folders) - set(folders))}")
    return folders, {s: [_image_files(d, extensions) for d in dirs[s]] for s in SPLITS}


def file_images(files: list[Path], image_size: int) -> FileImages:
    """``files`` in order as a source read by :func:`load_image` on demand (pipeline/data/sources.py), each
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
    extensions = _image_extensions()
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
