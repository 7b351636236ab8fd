"""Image sources read from disk on demand: a task's images as a list of items, decoded per batch.

The embedded benchmarks keep their images in memory as one uint8 tensor (N, 3, S, S). Data read from disk
(folder, mtil) would not fit that way (SUN397 at 224 px is about 15 GB), so `prepare` writes an index of
items instead and a source decodes the items a batch needs, in DataLoader workers (pipeline/data/loader.py).
A source indexes like that tensor (an int gives one image, a slice or an index list a uint8 batch) and has
its `shape`, `dtype` and `ndim`, so code that slices a task's images reads either kind unchanged.

A source is described by a JSON object (`describe`, `from_description`) that `save_task` writes beside the
labels. A folder source records each file's size and blake2b digest: the train stages depend on the prepared
index, not on the image folder, so a changed image must change the index for DVC to rerun what read it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from pipeline.errors import InputError

KINDS = ("files", "mtil")


class ImageSource:
    """N images of S x S pixels decoded on demand; subclasses implement `read` and `describe`."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, count: int, image_size: int):
        self.count, self.image_size = count, image_size

    def __len__(self) -> int:
        return self.count

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.count, 3, self.image_size, self.image_size))

    def read(self, i: int) -> np.ndarray:
        """uint8 (3, S, S) of item i."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int | slice | torch.Tensor | list[int] | tuple) -> torch.Tensor:
        if isinstance(index, tuple):  # images[i, c, ...]: the images first, then the tensor's own indexing
            return self[index[0]][index[1:]]
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return torch.from_numpy(np.array(self.read(_position(int(index), self.count))))
        positions = range(self.count)[index] if isinstance(index, slice) else \
            [_position(int(i), self.count) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        out = np.empty((len(positions), 3, self.image_size, self.image_size), np.uint8)
        for j, i in enumerate(positions):
            out[j] = self.read(i)
        return torch.from_numpy(out)


def _position(i: int, n: int) -> int:
    if not -n <= i < n:
        raise IndexError(f"image {i} out of range for {n} images")
    return i % n


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, blake2b hex digest) of a file: what the index records of it (module docstring)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read image ({e})") from e
    return len(data), hashlib.blake2b(data, digest_size=16).hexdigest()


class FileImages(ImageSource):
    """Image files, each read by images.load_image (RGB, shorter side to S, centre crop)."""

    def __init__(self, files: Iterable[str | Path], image_size: int, digests: list[list] | None = None):
        self.files = [str(f) for f in files]
        super().__init__(len(self.files), image_size)
        self.digests = digests if digests is not None else [list(file_digest(f)) for f in self.files]
        if len(self.digests) != self.count:
            raise ValueError(f"digests: need one per file ({self.count}), got {len(self.digests)}")

    def read(self, i: int) -> np.ndarray:
        from .images import load_image  # on first decode: a stage reading in-memory images never imports PIL

        return load_image(Path(self.files[i]), self.image_size)

    def describe(self) -> dict[str, Any]:
        return {"kind": "files", "image_size": self.image_size, "files": self.files, "digests": self.digests}


class MtilImages(ImageSource):
    """Items of one split of an MTIL task (pipeline/data/mtil_sets.py), fitted as folder images are. The
    torchvision data set is opened lazily in each process (it is not sent to DataLoader workers)."""

    def __init__(self, root: str, name: str, split: str, items: list[int], image_size: int):
        self.root, self.name, self.split, self.items = str(root), name, split, [int(i) for i in items]
        super().__init__(len(self.items), image_size)
        self._dataset = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}

    def read(self, i: int) -> np.ndarray:
        from .images import fit_image
        from .mtil_sets import mtil_split

        if self._dataset is None:
            self._dataset = mtil_split(self.root, self.name, self.split).dataset
        item = self.items[i]
        try:
            return fit_image(self._dataset[item][0], self.image_size)
        except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... for bad files
            raise InputError(f"tasks.{self.name} {self.split}, item {item}: cannot read image ({e})") from e

    def describe(self) -> dict[str, Any]:
        return {"kind": "mtil", "image_size": self.image_size, "root": self.root, "name": self.name,
                "split": self.split, "items": self.items}


def subset(images: ImageSource, items: list[int]) -> ImageSource:
    """The images at positions `items` of a source, as a source of the same kind (nothing decoded)."""
    if isinstance(images, FileImages):
        return FileImages([images.files[i] for i in items], images.image_size, [images.digests[i] for i in items])
    if isinstance(images, MtilImages):
        return MtilImages(images.root, images.name, images.split, [images.items[i] for i in items], images.image_size)
    raise TypeError(f"subset: no subset of a {type(images).__name__}")


def concat(parts: list[FileImages]) -> FileImages:
    """The files of `parts` in order, as one source (their digests kept, not recomputed)."""
    if not parts or len({p.image_size for p in parts}) != 1:
        raise ValueError(f"parts: need at least one, all of one image size, got {[p.image_size for p in parts]}")
    return FileImages([f for p in parts for f in p.files], parts[0].image_size, [d for p in parts for d in p.digests])


def from_description(d: Any, where: str) -> ImageSource:
    """The source a `describe()` object names; `where` (the file it came from) is named in errors."""
    if not isinstance(d, dict) or d.get("kind") not in KINDS or not isinstance(d.get("image_size"), int):
        raise InputError(f"{where}: expected an image source object with 'kind' one of {KINDS} and 'image_size'")
    try:
        if d["kind"] == "files":
            return FileImages(d["files"], d["image_size"], d["digests"])
        return MtilImages(d["root"], d["name"], d["split"], d["items"], d["image_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: invalid {d['kind']} image source ({e!r})") from e


def materialise(images: torch.Tensor | ImageSource) -> torch.Tensor:
    """Every image in memory as one uint8 tensor (small data only: the compression branch's target)."""
    return images if isinstance(images, torch.Tensor) else images[:]
