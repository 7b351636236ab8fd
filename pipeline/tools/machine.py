"""What a figure was measured on, recorded beside it by every command that writes one: E0's floats depend on
the CPU's kernels (issue: E0's draw moves with the CPU), and seconds on the machine."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# The instruction sets that decide which of torch's CPU kernels run (ATen's dispatch, oneDNN, MKL)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
# The environment variables that cap those kernels below what the CPU has (another CPU's kernels, approached)
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine() -> dict[str, object]:
    """The CPU's model, cores and kernel-deciding flags, torch's version and chosen capability, the GPU if any."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    field = lambda name: next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(name)), "")  # noqa: E731
    flags = set(field("flags").split())
    info = {"cpu": field("model name") or platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "flags": [f for f in ISA_FLAGS if f in flags], "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    capped = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    if capped:
        info["kernel_env"] = capped
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
