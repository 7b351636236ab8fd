"""`python -m pipeline.tools.get_data fashion-mnist [--root DIR] [--source DIR] [--download]` (`make data-fashion-mnist`):
put Fashion-MNIST's four idx files where torchvision reads them, ``<root>/FashionMNIST/raw/`` (root: --root, else
params.yaml's target.root).

From Debian's package ``dataset-fashion-mnist`` first (its .gz files under --source, by default
/usr/share/datasets/fashion-mnist; the Makefile installs the package through apt where apt is), decompressed
there, since torchvision reads the idx files uncompressed; else, with --download, through torchvision's own
download (a network needed). The pipeline itself never downloads. Files already there are left alone."""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.data.fashion_mnist import FILES, check_files, raw_folder
from pipeline.errors import InputError, MissingInput
from pipeline.stages.common import stage

DEBIAN_SOURCE = Path("/usr/share/datasets/fashion-mnist")  # `dpkg -L dataset-fashion-mnist`


def params_root() -> str:
    """target.root of params.yaml (read as YAML, not validated: the params may name the data not yet here)."""
    raw = yaml.safe_load(paths.PARAMS.read_text()) if paths.PARAMS.is_file() else {}
    return str(((raw or {}).get("target") or {}).get("root") or "datasets")


def from_gz(source: Path, folder: Path) -> list[str]:
    """Decompress each missing idx file from `source` (the file or its .gz) into `folder`; written to a temp
    file, then renamed, so a killed copy leaves no half file. Returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in FILES:
        target = folder / name
        if target.is_file():
            continue
        plain, packed = source / name, source / f"{name}.gz"
        if not plain.is_file() and not packed.is_file():
            raise MissingInput(f"--source: {source} holds neither {name} nor {name}.gz")
        tmp = folder / f".{name}.tmp"
        with (open(plain, "rb") if plain.is_file() else gzip.open(packed, "rb")) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(tmp, target)
        written.append(name)
    return written


def download(root: Path) -> None:
    """torchvision's FashionMNIST download (both splits), into <root>/FashionMNIST/raw/."""
    import torchvision.datasets

    for train in (True, False):
        try:
            torchvision.datasets.FashionMNIST(str(root), train=train, download=True)
        except (OSError, RuntimeError) as e:  # no network, a mirror down
            raise InputError(f"torchvision's FashionMNIST download into {root} failed ({e!r})") from e


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.get_data", description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=["fashion-mnist"])
    parser.add_argument("--root", help="where torchvision reads it (default: params.yaml target.root)")
    parser.add_argument("--source", type=Path, default=DEBIAN_SOURCE,
                        help=f"the idx files (.gz or not) to take (default: Debian's, {DEBIAN_SOURCE})")
    parser.add_argument("--download", action="store_true",
                        help="without the files at --source, download them through torchvision (needs a network)")
    args = parser.parse_args(argv)
    root = Path(args.root or params_root())
    folder = raw_folder(root)
    if args.source.is_dir():
        written = from_gz(args.source, folder)
        how = f"decompressed {len(written)} files from {args.source}" if written else "already there"
    elif args.download:
        download(root)
        how = "downloaded by torchvision"
    else:
        raise MissingInput(f"--source: {args.source} does not exist: install Debian's dataset-fashion-mnist "
                           f"(apt-get install dataset-fashion-mnist), or pass --download (needs a network)")
    check_files(root, key="--root")
    print(f"Fashion-MNIST in {folder}: {how}")


if __name__ == "__main__":
    main()
