"""E0's pretraining set of the ``folder`` benchmark: ``<root>/pretrain/``, apart from the tasks.

Kept apart so that E0's zero-shot row (row 0 of the accuracy matrix) is measured on tasks E0 has not seen;
pretraining on the tasks' own training images is the opt-in ``data.pretrain_on_tasks`` (``benchmarks``).
The folder holds one of two layouts, chosen by what is in it (both at once is an error):

- class folders ``pretrain/<class>/<image files>`` (and optionally ``pretrain/classnames.txt``), read and
  captioned like a task's training images: the data templates filled with the class text, round-robin per
  class, at most ``data.corpus_per_class`` images per class;
- an image-caption list ``pretrain/captions.tsv``: UTF-8, one ``relative/path.png<TAB>caption`` pair per
  line, the path relative to ``pretrain/`` (sub-folders allowed, never outside it), blank lines and lines
  starting with ``#`` skipped; an image may appear on several lines (one pair per line). Used whole:
  ``corpus_per_class`` has no classes to cap here. A sub-folder of ``pretrain/`` that no listed path goes
  through is taken for a class folder, so it makes the folder hold both layouts.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Literal

from pipeline import io
from pipeline.errors import InputError
from .folder import build_class_folder_corpus, file_images
from .types import CaptionCorpus

PRETRAIN_DIR = "pretrain"  # reserved: no task may have this name
CAPTIONS_FILE = "captions.tsv"

Layout = Literal["classes", "captions"]


def pretrain_dir(root: str | Path) -> Path:
    return Path(root) / PRETRAIN_DIR


def read_caption_list(path: Path) -> list[tuple[str, str]]:
    """(relative image path, caption) pairs of a caption list, in file order; errors name ``path:line``."""
    text = io.read_utf8(path)
    pairs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rel, sep, caption = line.partition("\t")
        rel, caption = rel.strip(), caption.strip()
        if not sep or not rel or not caption:
            raise InputError(f"{path}:{lineno}: expected 'relative/image/path<TAB>caption', got {line!r}")
        parts = PurePosixPath(rel)
        if parts.is_absolute() or ".." in parts.parts:
            raise InputError(f"{path}:{lineno}: image path {rel!r} must be relative to {path.parent} and stay in it")
        pairs.append((rel, caption))
    if not pairs:
        raise InputError(f"{path}: no image-caption pairs")
    return pairs


def pretrain_layout(folder: Path) -> Layout:
    """Which layout ``folder`` holds (module docstring); raises ValueError naming it for neither or both."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a directory")
    subdirs = {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    listing = folder / CAPTIONS_FILE
    if listing.is_file():
        used = {PurePosixPath(rel).parts[0] for rel, _ in read_caption_list(listing)}
        strays = sorted(subdirs - used)
        if strays:
            raise InputError(f"{folder}: holds both {CAPTIONS_FILE} and class folders it lists no image in "
                             f"({', '.join(strays)}); use class folders or a caption list, not both")
        return "captions"
    if subdirs:
        return "classes"
    raise InputError(f"{folder}: holds neither class folders nor {CAPTIONS_FILE}")


def build_pretrain_corpus(folder: Path, *, image_size: int, templates: list[str],
                          per_class: int | None) -> CaptionCorpus:
    """The corpus of ``folder`` in either layout; an unreadable or missing image raises naming its path."""
    folder = Path(folder)
    if pretrain_layout(folder) == "classes":
        return build_class_folder_corpus(folder, image_size=image_size, templates=templates, per_class=per_class)
    pairs = read_caption_list(folder / CAPTIONS_FILE)
    images = file_images([folder / rel for rel, _ in pairs], image_size)
    return CaptionCorpus(images=images, captions=[caption for _, caption in pairs])
