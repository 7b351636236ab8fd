"""Seeding, threads and device: what makes a CPU run repeatable."""
from __future__ import annotations

import logging
import random
import zlib

import numpy as np
import torch

from pipeline.config import RuntimeParams
from pipeline.errors import InputError


def setup(runtime: RuntimeParams, seed: int) -> torch.device:
    """Fix every random stream and the thread count; return the device to run on."""
    torch.set_num_threads(runtime.threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # open_clip warns on every fresh model that no pretrained weights were loaded: that is our default.
    logging.getLogger().setLevel(logging.ERROR)
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise InputError("runtime.device: 'cuda' requested but no CUDA device is available (use cpu or auto)")
    use_cuda = runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        # CPU kernels are already repeatable for a fixed thread count; deterministic mode there only costs
        # time (20x on embedding backward), so it is switched on for CUDA alone.
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.device("cuda" if use_cuda else "cpu")


def stable_seed(*parts: object) -> int:
    """A seed derived from names and numbers that is the same in every process (unlike hash())."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA's peak allocation on a GPU, else the peak resident set size
    (ru_maxrss, which Linux reports in KiB), so it includes the interpreter, torch and the data."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
