"""`python -m pipeline.check`: validate params.yaml and the data it names before DVC runs anything
(`make repro` calls it first: DVC deletes a stage's outputs before running it).

Every key of every section (a stage validates only when DVC runs it, and DVC runs no stage for a key no
stage reads, such as a misspelt top-level one), the open_clip and timm names that stages check only where
they import those libraries, the task chain, `model.pretrained` (a tag in the local cache, a file of plain weights),
and the user's images the params name (folder benchmark: each
task's layout, class names and every image file's header; the fashion_mnist target: its idx files). An error is one line naming the key, folder or
file, exit 2; nothing is written."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import LIBRARIES, Params
from pipeline.errors import InputError
from pipeline.stages.common import load_params, stage


def folder_tasks(params: Params) -> list[Path]:
    """The task folders of the folder benchmark that prepare and target will read."""
    root = Path(params.data.root)
    tasks = [root / t for t in params.task_names] if params.data.benchmark == "folder" else []
    if params.target.benchmark == "folder" and root / params.target.task not in tasks:
        tasks.append(root / params.target.task)
    return tasks


def verify_image(path: Path) -> None:
    """PIL's verify: a truncated or non-image file is named here, not after DVC removed the outputs."""
    from PIL import Image

    try:
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
    """E0's pretraining set of the folder benchmark (its layout is checked with the params): every image."""
    from pipeline.data.folder import _image_extensions
    from pipeline.data.folder_pretrain import pretrain_dir

    folder = pretrain_dir(params.data.root)
    if params.data.benchmark != "folder" or not folder.is_dir():
        return 0
    extensions = _image_extensions()
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in extensions
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in paths:
        verify_image(path)
    return len(paths)


@stage
def main(argv: list[str]) -> None:
    if argv:
        raise SystemExit("usage: python -m pipeline.check  (reads params.yaml, or $PIPELINE_PARAMS)")
    params = load_params(*LIBRARIES)
    if params.model.pretrained is not None:  # a tag not in the cache, a file that is no plain weights
        from pipeline.models import clip, weights

        weights.resolve(clip._open_clip(), params.model.arch, params.model.pretrained)
    images = sum(check_task_images(task) for task in folder_tasks(params)) + check_pretrain_images(params)
    found = f", {images} images under {params.data.root}" if images else ""
    if params.target.benchmark == "fashion_mnist":  # its files exist (params); here torchvision parses them
        from pipeline.data.fashion_mnist import open_split

        sizes = [len(open_split(params.target.root, split)) for split in ("train", "test")]
        found += f", Fashion-MNIST {sizes[0]} train / {sizes[1]} test images under {params.target.root}"
    print(f"params.yaml: ok ({params.data.benchmark} benchmark, tasks {' -> '.join(params.task_names)}{found})")


if __name__ == "__main__":
    main()
