"""Seeding, threads, device and precision: what makes a CPU run repeatable and a GPU run fast."""
from __future__ import annotations

import contextlib
import logging
import random
import zlib

import numpy as np
import torch

from pipeline.errors import InputError

# runtime.precision -> the autocast dtype; fp32 has none: no autocast context is entered at all.
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def setup(seed: int, *, device: str, threads: int, precision: str = "fp32") -> torch.device:
    """Fix every random stream and the thread count; on CUDA, switch on TF32 and deterministic algorithms;
    return the device to run on. Plain values, params.yaml's `runtime` keys (a stage passes its section through
    stages/common.py's `setup_runtime`, which also sets the image loaders). bf16 where the device resolves to
    the CPU is refused here (see `autocast`)."""
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # open_clip warns on every fresh model that no pretrained weights were loaded: that is our default.
    logging.getLogger().setLevel(logging.ERROR)
    use_cuda = check_device(device, precision)
    if use_cuda:
        # CPU kernels are already repeatable for a fixed thread count; deterministic mode there only costs
        # time (20x on embedding backward), so it is switched on for CUDA alone.
        torch.use_deterministic_algorithms(True, warn_only=True)
        cuda_math()
    return torch.device("cuda" if use_cuda else "cpu")


def check_device(device: str, precision: str = "fp32") -> bool:
    """Whether the run uses CUDA (params.yaml's `runtime.device` and `runtime.precision`); a device or precision
    this machine lacks is an InputError naming the key (also called by the params check, before DVC removes
    any output)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("runtime.device: 'cuda' requested but no CUDA device is available (use cpu or auto)")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if precision != "fp32" and not use_cuda:  # device: cpu is refused at params load already
        raise InputError(f"runtime.precision: {precision} needs a CUDA device, and runtime.device "
                         f"'{device}' found none here (use fp32 on the CPU)")
    return use_cuda


def cuda_math() -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (every one in `runtime.precision: fp32`; under bf16,
    those outside an autocast context), and no cuDNN autotuning. Called for CUDA only: a CPU run never
    touches these flags.

    - The per-backend flags, not `torch.set_float32_matmul_precision("high")`: that one also sets oneDNN's
      fp32 matmul precision, i.e. the CPU's, and a CPU run must stay byte-identical. And these legacy flags,
      not the newer `fp32_precision` ones: after the new API, torch raises on any read of `allow_tf32` (by
      us or a library), while the new getters still read the legacy flags' state.
    - `cudnn.benchmark` stays off: it times the candidate convolution algorithms on the first call of each
      shape and keeps the fastest, so which kernel runs (and how it rounds) would depend on timing noise,
      and the same params could give different weights on two runs (deterministic mode, on for CUDA runs,
      narrows the candidates to deterministic kernels but still lets the timing pick among them)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = False


def autocast(device: torch.device, precision: str):
    """The context the forward passes and losses of a training loop, an evaluation or a feature extraction
    run in: nothing at all (`contextlib.nullcontext`) in fp32, so the default runs the very same kernels as
    without this code; bf16 autocast on CUDA otherwise. Backward and the optimiser's step run outside it
    (backward ops take the dtype autocast gave their forward op). Weights, gradients and optimiser state stay
    fp32: autocast casts copies of the weights for the listed ops only.

    No GradScaler: it exists for fp16, whose 5 exponent bits let small gradients underflow to 0; bf16 has
    fp32's 8 exponent bits and the same range, so gradients need no scaling.

    bf16 on a CPU device is refused, in one line, not run as fp32: (1) checkpoints and DVC's run-cache
    record `runtime.precision: bf16`, and fp32 outputs filed under it would later be restored as bf16 ones;
    (2) CPU bf16 autocast is emulated, and slower than fp32, on CPUs without native bf16 (AVX512-BF16, AMX),
    which is most laptops the default targets; so there is no use for it here to make up for (1)."""
    dtype = AUTOCAST_DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise InputError(f"runtime.precision: {precision} needs a CUDA device, not {device.type} (use fp32 on the CPU)")
    return torch.autocast("cuda", dtype=dtype)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch onto `device`: asynchronous on CUDA (it overlaps compute where the source is pinned; from
    pageable memory the copy is staged and safe either way), the same `.to` as ever elsewhere (on the CPU,
    `x` itself). Host to device only: a non-blocking copy back to the host could be read before it lands."""
    return x.to(device, non_blocking=device.type == "cuda")


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
