"""Random streams of the embedded benchmarks: one independent numpy generator per (seed, name, ...)."""
from __future__ import annotations

import zlib

import numpy as np


def stream_rng(seed: int, *stream: str) -> np.random.Generator:
    """An independent stream per (seed, *stream); crc32 because Python's hash() is salted per process."""
    if seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    return np.random.default_rng([seed, zlib.crc32("/".join(stream).encode())])
