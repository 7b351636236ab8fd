"""Several processes (one per GPU, or gloo processes on the CPU) training one task through torchrun.

`runtime.nproc` > 1: the train stage re-executes itself as `torchrun --standalone --nproc_per_node N` (the same
process, replaced: DVC's kill reaches it), and every worker trains the same model on its share of each
global batch. The method must mean the same thing on one process or many, so:

- each rank takes a contiguous, equal slice of the global index batch (`shard`), so the loaders of the
  ranks read disjoint images and their concatenation in rank order is the global batch;
- a term that is a per-sample mean over the batch (L_ce, LwF's and LwM's terms) is computed on the slice:
  the mean of the ranks' gradients (`average_gradients`, after backward, before the optimiser's step) is
  then the gradient of the global batch;
- a term with interactions inside the batch (the dual teacher's L_con and its Frobenius-norm L_dis, its
  prototype update) is computed on the global batch, which every rank gathers (`gather_rows`): each rank
  then computes the same loss, whose gradient reaches its weights through its own rows only, so the
  gather's backward multiplies those rows' gradient by the number of ranks (`_GatherRows`), and the mean
  over ranks is again the global batch's gradient;
- a term of data every rank holds whole (ZSCL's reference batch, drawn from the same seeded stream on each
  rank) has the same gradient on every rank, which the mean leaves as it is.

What does differ from one process, beyond rounding: BatchNorm in training mode (`train.freeze_bn: false` with a
CNN image tower) normalises with each rank's slice's statistics, as plain DDP does (no SyncBatchNorm). And the
set-up (teacher features, LwM's Grad-CAM maps) runs on every rank, not split, as does ZSCL's reference batch.

With one process (no torchrun in the environment) every function here returns its input itself, untouched:
the CPU default runs exactly the operations it ran before this module existed.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable

import torch
from torch import Tensor

from pipeline.errors import InputError


def launched() -> bool:
    """Whether this process is a worker started by torchrun (which sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0: the one process that logs, evaluates and writes the stage's outputs."""
    return rank() == 0


def torchrun_command(nproc: int, module: str, argv: list[str]) -> list[str]:
    """`python -m torch.distributed.run` (torchrun, by the same interpreter) starting `nproc` workers of
    `python -m module argv` on this machine (`--standalone`: a local rendezvous on a free port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", module, *argv]


def relaunch(nproc: int, module: str, argv: list[str]) -> None:
    """Replace this process by torchrun running `nproc` workers of `module` (never returns). exec, not a
    child: the stage's process id stays the one DVC waits on, and its parent-death signal (set by
    stages/common.py, kept across exec) still ends it, and torchrun ends its workers."""
    command = torchrun_command(nproc, module, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def init(device: torch.device, nproc: int) -> torch.device:
    """Join the process group of torchrun's workers (gloo on the CPU, NCCL on CUDA, one GPU per worker:
    cuda:LOCAL_RANK) and return the device this worker runs on. Outside torchrun, or with one worker, it
    does nothing and returns `device`."""
    world = world_size()
    if world != nproc and launched():
        raise InputError(f"runtime.nproc: {nproc}, but torchrun started {world} processes (WORLD_SIZE)")
    if world == 1:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        if local_rank() >= torch.cuda.device_count():
            raise InputError(f"runtime.nproc: {nproc} processes on this machine, but it has "
                             f"{torch.cuda.device_count()} CUDA devices (one per process)")
        torch.cuda.set_device(local_rank())
        device = torch.device("cuda", local_rank())
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def finish() -> None:
    """Leave the process group (a no-op outside one), so that no worker exits with it still open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Tensor, rank_: int | None = None, world: int | None = None) -> Tensor:
    """This rank's contiguous slice of a global batch of `indices` (B,): B / world rows, rank r taking rows
    [r B / world, (r + 1) B / world). One process: `indices` itself. Equal slices keep the mean of the
    ranks' gradients equal to the global batch's (a rank with fewer rows would weigh each of them more)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if world == 1:
        return indices
    size = len(indices)
    if size % world:
        # train.batch_size is checked at load (pipeline/params); a task with fewer images than a batch draws smaller ones.
        raise InputError(f"train.batch_size: a batch of {size} images does not split into runtime.nproc {world} "
                         f"equal shares (the task has fewer training images than train.batch_size)")
    share = size // world
    return indices[rank_ * share : (rank_ + 1) * share]


def gather(x: Tensor) -> Tensor:
    """The global batch of a per-rank tensor without gradient (labels, indices): every rank's slice,
    concatenated in rank order (so rows come back in the global batch's order). One process: `x`."""
    if world_size() == 1:
        return x
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class _GatherRows(torch.autograd.Function):
    """All-gather with a gradient for this rank's rows only, multiplied by the world size.

    Every rank computes the same loss of the gathered batch, and `average_gradients` takes the mean of the
    ranks' gradients: the rows of rank r reach weights through rank r's graph alone, so their share of the
    mean would be 1 / world of their true gradient, while the inputs every rank computes alike (class text
    features) count in full. Multiplying the local rows' gradient by the world size makes the mean exact.
    No communication in backward: the other ranks' rows are constants here."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows] * world_size()


def gather_rows(x: Tensor) -> Tensor:
    """The global batch of per-rank rows with gradient (features): see `_GatherRows`. One process: `x`."""
    return x if world_size() == 1 else _GatherRows.apply(x)


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over the ranks, in one all-reduce of a flat buffer (one call, not
    one per tensor). Parameters without a gradient are skipped: every rank runs the same graph, so the same
    ones have none on every rank. Called between backward and the optimiser's step; one process: nothing."""
    world = world_size()
    if world == 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)  # a sum: gloo has no AVG
    flat /= world
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def mean_of(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Logged values (a step's loss terms) averaged over the ranks: a per-rank mean over equal slices then
    gives the global batch's value, and a value the ranks share (a term of the gathered batch) stays as
    it is. `device`: the worker's (NCCL reduces CUDA tensors only). One process: `values` itself."""
    if world_size() == 1:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    buffer = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(buffer)
    buffer /= world_size()
    return dict(zip(keys, buffer.tolist()))
