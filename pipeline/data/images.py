"""Decoding one image file into the uint8 (3, S, S) array every benchmark read from disk uses: RGB by the
image's own range, shorter side resized to S, centre crop. A leaf module (PIL and numpy only): the image
sources decode their items here in DataLoader workers (pipeline/data/sources.py), the folder and mtil
benchmarks while preparing, `predict` the images it classifies."""
from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import InputError


def image_extensions() -> set[str]:
    """Every file extension PIL opens (lower case, with the dot): what the folder benchmark counts as an image."""
    Image.init()  # registers every plugin so the extension table is complete
    return {ext.lower() for ext in Image.registered_extensions()}


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
