"""The ``fashion_mnist`` target: Fashion-MNIST (Xiao et al., 2017), real photographs of clothing, read by
torchvision's ``FashionMNIST`` from ``<root>/FashionMNIST/raw/`` (the four idx files, uncompressed, as
torchvision keeps them after its own download).

Nothing is downloaded at run time: a missing file is one InputError naming the folder and both ways to fill
it (`make data-fashion-mnist`: Debian's ``dataset-fashion-mnist`` package where apt is, else torchvision's
download where there is a network; pipeline/get_data.py). 60,000 training and 10,000 test images of 28 x 28
grey pixels, ten balanced classes. A subset draws N images a class without replacement from a stream of
(``data.seed``, split), as the mtil benchmark's few-shot draw: the same seed gives the same images.

Images become the project's uint8 (N, 3, S, S) by LeNet-5's MNIST convention: at S = 32 the 28 px image sits
on a black 2 px border (no resampling; Fashion-MNIST's background is 0); another S scales the image to
round(28 S / 32) px first (bilinear, antialiased), so the border keeps its share. Grey is repeated to RGB."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.errors import InputError, MissingInput
from .streams import stream_rng
from .types import TaskData

TASK = "fashion_mnist"  # the benchmark's one task (target.task)
FOLDER = Path("FashionMNIST") / "raw"  # under the root, where torchvision reads (and downloads to)
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SPLITS = {"train": True, "test": False}  # torchvision's `train` flag of each split
TEMPLATES = ["a photo of a {}."]
HOW_TO_GET = ("nothing is downloaded at run time: `make data-fashion-mnist` puts it there (Debian's "
              "dataset-fashion-mnist package through apt where apt is, else torchvision's download where there is "
              "a network)")


def raw_folder(root: str | Path) -> Path:
    return Path(root) / FOLDER


def check_files(root: str | Path, key: str = "target.root") -> None:
    """Fail before any compute, in one line naming the folder and both ways to fill it, if an idx file is
    missing (only its .gz there: the same line says to decompress it)."""
    folder = raw_folder(root)
    missing = [f for f in FILES if not (folder / f).is_file()]
    if not missing:
        return
    gz = [f for f in missing if (folder / f"{f}.gz").is_file()]
    hint = (f"; {len(gz)} of them only as .gz: decompress them there (gunzip -k), torchvision reads the idx files"
            if gz else "")
    raise MissingInput(f"{key}: Fashion-MNIST not found: {folder} lacks {', '.join(missing)}{hint} ({key} is "
                       f"{str(root)!r}); {HOW_TO_GET}")


def open_split(root: str | Path, split: str):
    """torchvision's FashionMNIST of `split` (train / test) under `root`; errors as one line."""
    import torchvision.datasets

    check_files(root)
    try:
        return torchvision.datasets.FashionMNIST(str(root), train=SPLITS[split], download=False)
    except (RuntimeError, OSError, ValueError, AssertionError) as e:  # a truncated or foreign idx file
        raise InputError(f"target.root: torchvision's FashionMNIST cannot read {raw_folder(root)} ({e!r})") from e


def per_class_indices(labels: torch.Tensor, k: int | None, seed: int, split: str) -> torch.Tensor:
    """Positions of `k` items a class, drawn without replacement from the stream (seed, split), sorted so the
    data set's order stays; a class with fewer keeps all of them; `k` None: every position."""
    if k is None:
        return torch.arange(len(labels))
    rng = stream_rng(seed, TASK, split)
    labels_arr = labels.numpy()
    chosen = []
    for c in np.unique(labels_arr):  # sorted: the draws do not depend on the items' order
        where = np.flatnonzero(labels_arr == c)
        chosen.extend(where if len(where) <= k else rng.choice(where, size=k, replace=False))
    return torch.tensor(sorted(int(i) for i in chosen), dtype=torch.int64)


def fit_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) grey -> uint8 (N, 3, size, size) (module docstring: LeNet-5's border)."""
    inner = round(size * images.shape[-1] / 32)
    x = images[:, None]
    if inner != images.shape[-1]:
        x = torch.nn.functional.interpolate(x.float(), size=(inner, inner), mode="bilinear", antialias=True,
                                            align_corners=False).round().clamp(0, 255).to(torch.uint8)
    before = (size - inner) // 2
    after = size - inner - before
    x = torch.nn.functional.pad(x, (before, after, before, after))
    return x.expand(-1, 3, -1, -1).contiguous()


def build_fashion_mnist_task(root: str | Path, *, image_size: int, train_per_class: int | None,
                             test_per_class: int | None, seed: int) -> TaskData:
    """The ten-class task: `train_per_class` / `test_per_class` images a class of each split (None: all),
    drawn with `seed`, in memory (70,000 images at 32 px are 215 MB)."""
    splits = {}
    for split, k in (("train", train_per_class), ("test", test_per_class)):
        dataset = open_split(root, split)
        keep = per_class_indices(dataset.targets, k, seed, split)
        splits[split] = (fit_images(dataset.data[keep], image_size), dataset.targets[keep].to(torch.int64))
        classes = list(dataset.classes)
    return TaskData(name=TASK, classes=classes, templates=list(TEMPLATES), train_images=splits["train"][0],
                    train_labels=splits["train"][1], test_images=splits["test"][0], test_labels=splits["test"][1])
