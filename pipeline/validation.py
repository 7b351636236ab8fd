"""Everything a stage would refuse, checked before DVC removes any output: all of params.yaml, the names of
the libraries it names (open_clip, timm), the device, `model.pretrained` (a tag in the local cache, or a file
of plain weights whose keys and shapes fit `model.arch`), and the user's images (folder benchmark: each task's
layout, class names and every image file's header; E0's pretraining set, the caption list's every path; the
fashion_mnist target: its idx files).

Run by the DVC stage `check` (pipeline/stages/check.py), the first of the pipeline, and by
`python -m pipeline.tools.check`, on params loaded with every library's names checked (`load_params(*LIBRARIES)`). An error is one InputError line naming the key, folder or file."""
from __future__ import annotations

import warnings
from pathlib import Path

from pipeline.params import Params
from pipeline.errors import InputError


def check_all(params: Params) -> str:
    """Validate what `params` (loaded with every library's names checked, `LIBRARIES`) name: the device, the
    pretrained weights, the images; returns the one-line summary."""
    from pipeline import runtime

    runtime.check_device(params.runtime.device, params.runtime.precision)
    if params.model.pretrained is not None:  # a tag not in the cache, a file that is no weights of model.arch
        from pipeline.models import clip, weights

        weights.check_fits(clip._open_clip(), params.model.arch, params.data.image_size, params.model.pretrained)
    images = sum(check_task_images(task) for task in folder_tasks(params)) + check_pretrain_images(params)
    found = f", {images} images under {params.data.root}" if images else ""
    if params.target.benchmark == "fashion_mnist":  # its files exist (params); here torchvision parses them
        from pipeline.data.fashion_mnist import open_split

        sizes = [len(open_split(params.target.root, split)) for split in ("train", "test")]
        found += f", Fashion-MNIST {sizes[0]} train / {sizes[1]} test images under {params.target.root}"
    return f"params.yaml: ok ({params.data.benchmark} benchmark, tasks {' -> '.join(params.task_names)}{found})"


def folder_tasks(params: Params) -> list[Path]:
    """The task folders of the folder benchmark that prepare and target will read."""
    root = Path(params.data.root)
    tasks = [root / t for t in params.task_names] if params.data.benchmark == "folder" else []
    if params.target.benchmark == "folder" and root / params.target.task not in tasks:
        tasks.append(root / params.target.task)
    return tasks


def verify_image(path: Path) -> None:
    """PIL's verify: a truncated or non-image file is named here, not after DVC removed the outputs. PIL's
    decompression-bomb warning (an image over ~89 Mpx) is left to the stage that decodes it, which says it once."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.verify()
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ... for bad files
        raise InputError(f"{path}: cannot read image ({e})") from e


def check_task_images(task_dir: Path) -> int:
    """Layout and class names as prepare reads them, and every image's header. Returns the image count."""
    from pipeline.data.folder import _class_texts, _scan

    folders, files = _scan(task_dir)
    _class_texts(task_dir, folders)
    paths = [p for split_files in files.values() for class_files in split_files for p in class_files]
    for path in paths:
        verify_image(path)
    return len(paths)


def check_pretrain_images(params: Params) -> int:
    """E0's pretraining set of the folder benchmark: its layout, every path its caption list names, every image."""
    from pipeline.data.images import image_extensions
    from pipeline.data.folder_pretrain import CAPTIONS_FILE, pretrain_dir, pretrain_layout, read_caption_list

    folder = pretrain_dir(params.data.root)
    if params.data.benchmark != "folder" or not folder.is_dir():
        return 0
    if pretrain_layout(folder) == "captions":
        listing = folder / CAPTIONS_FILE
        paths = sorted({folder / rel for rel, _ in read_caption_list(listing)})
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"{listing}: lists {missing[0].relative_to(folder).as_posix()!r}, which is no file "
                             f"under {folder}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    else:
        extensions = image_extensions()
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                       and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in paths:
        verify_image(path)
    return len(paths)
