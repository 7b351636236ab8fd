"""Several processes (one per GPU, or gloo processes on the CPU), on one node or several, training through
torchrun and `torch.nn.parallel.DistributedDataParallel`: the small helpers around DDP (launch, process group,
per-rank seeds, sharding, gathering, the wrap itself).

`runtime.nproc` > 1 or `runtime.nodes` > 1: the train stage re-executes itself under torchrun (`relaunch`: the
same process, replaced, so DVC's kill reaches it): `--standalone` on one node, the static rendezvous at
`runtime.rdzv_endpoint` with this node's `--node-rank` across several. Every worker then trains the same model
on its share of each global batch, and DDP averages the gradients (bucketed all-reduces overlapping the
backward; rank 0's parameters and buffers broadcast at the wrap, its buffers before every forward). A method
means the same thing on one process or many:

- each rank takes a contiguous, equal slice of the global index batch (`shard`), so the loaders of the ranks
  read disjoint images and their concatenation in rank order is the global batch (the same for any number of
  processes: this is what the equivalence tests compare);
- a term that is a per-sample mean over the batch (L_ce, LwF's and LwM's terms) is computed on the slice, and
  DDP's mean of the ranks' gradients is then the global batch's gradient;
- a term with interactions inside the batch (the dual teacher's L_con and its Frobenius-norm L_dis, its
  prototype update) is computed on the global batch, which every rank gathers (`gather_rows`): each rank then
  computes the same loss, whose gradient reaches its weights through its own rows only, so the gather's
  backward multiplies those rows' gradient by the number of ranks (`_GatherRows`), and DDP's mean over ranks
  is again the global batch's gradient;
- a term of data every rank holds whole (ZSCL's reference batch, drawn from the same seeded stream on each
  rank) has the same gradient on every rank, which the mean leaves as it is.

What differs from one process, beyond rounding: BatchNorm in training mode normalises with each rank's slice's
statistics on the CPU (gloo), where torch's SyncBatchNorm does not run; on CUDA the compression students and
cohorts are converted to SyncBatchNorm (`wrap`), which normalises with the global batch's. Random draws other
than the batch order (`rank_seed`: torch's global stream, `train.augment`'s crops) differ between ranks.
Caches shared by the ranks (teacher features) are computed and written by rank 0 alone, the others waiting at
a `barrier` and then reading them.

With one process (no torchrun in the environment) every function here returns its input itself, untouched,
and nothing is wrapped: the CPU default runs exactly the operations it ran before this module existed.
"""
from __future__ import annotations

import datetime
import os
import sys

import torch
from torch import Tensor, nn

from pipeline.errors import InputError
from pipeline.runtime import stable_seed

# How long a rank waits in a collective (a barrier while rank 0 computes a teacher's features of a whole task,
# DDP's first all-reduce while another rank still loads): torch's default is 10 minutes for NCCL, too short for
# one pass of a large teacher over a large task.
TIMEOUT = datetime.timedelta(hours=2)


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
    """Rank 0: the one process that logs, evaluates and writes the stage's outputs and shared caches."""
    return rank() == 0


def torchrun_command(nproc: int, module: str, argv: list[str], nodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None) -> list[str]:
    """`python -m torch.distributed.run` (torchrun, by the same interpreter) starting `nproc` workers of
    `python -m module argv` on this node: `--standalone` (a local rendezvous on a free port) on one node; on
    several, torchrun's static rendezvous at `rdzv_endpoint` (host:port of node 0) with this node's rank.
    Static, not c10d: c10d ignores `--node-rank` and numbers the nodes in the order of their ids, so global
    rank 0 (the one that writes the outputs) could land on another node than the one DVC runs on."""
    if nodes == 1:
        launch = ["--standalone"]
    else:
        launch = [f"--nnodes={nodes}", f"--node-rank={node_rank}", "--rdzv-backend=static",
                  f"--rdzv-endpoint={rdzv_endpoint}"]
    return [sys.executable, "-m", "torch.distributed.run", *launch, f"--nproc-per-node={nproc}", "-m", module, *argv]


def relaunch(runtime_params, module: str, argv: list[str]) -> None:
    """Replace this process by torchrun running `runtime.nproc` workers of `module` on this node of
    `runtime.nodes` (never returns). exec, not a child: the stage's process id stays the one DVC waits on, and
    its parent-death signal (set by stages/common.py, kept across exec) still ends it, and torchrun ends its
    workers."""
    r = runtime_params
    command = torchrun_command(r.nproc, module, argv, r.nodes, r.node_rank, r.rdzv_endpoint)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def wanted(runtime_params) -> bool:
    """Whether the stage should run under torchrun (several processes or nodes) and is not yet."""
    return runtime_params.nproc * runtime_params.nodes > 1 and not launched()


def init(device: torch.device, nproc: int, nodes: int = 1) -> torch.device:
    """Join the process group of torchrun's workers (gloo on the CPU, NCCL on CUDA, one GPU per worker:
    cuda:LOCAL_RANK) and return the device this worker runs on. Outside torchrun, or with one worker, it
    does nothing and returns `device`."""
    world = world_size()
    if world != nproc * nodes and launched():
        raise InputError(f"runtime.nproc: {nproc} on runtime.nodes {nodes}, but torchrun started {world} processes "
                         f"(WORLD_SIZE)")
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
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def finish() -> None:
    """Leave the process group (a no-op outside one), so that no worker exits with it still open."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank is here (after rank 0 wrote a shared cache, before the others read it). One
    process: nothing."""
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def rank_seed(seed: int) -> int:
    """The seed of this rank's random streams other than the batch order (torch's global stream, random
    augmentation): `seed` itself with one process (the one-process run unchanged), else one of its own per
    rank, so that ranks do not draw the same crops or dropout masks for different images. The batch order is
    not seeded from it: every rank draws the same global batches (`shard` takes its slice)."""
    return seed if world_size() == 1 else stable_seed(seed, "rank", rank())


def shard(indices: Tensor, rank_: int | None = None, world: int | None = None) -> Tensor:
    """This rank's contiguous slice of a global batch of `indices` (B,): B / world rows, rank r taking rows
    [r B / world, (r + 1) B / world). One process: `indices` itself. Equal slices keep DDP's mean of the
    ranks' gradients equal to the global batch's (a rank with fewer rows would weigh each of them more)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    if world == 1:
        return indices
    size = len(indices)
    if size % world:
        # train.batch_size is checked at load (pipeline/params); a task with fewer images than a batch draws smaller ones.
        raise InputError(f"train.batch_size: a batch of {size} images does not split into {world} processes' "
                         f"equal shares (runtime.nproc {world} in all; the task has fewer training images than "
                         f"train.batch_size)")
    share = size // world
    return indices[rank_ * share : (rank_ + 1) * share]


def wrap(module: nn.Module, device: torch.device, sync_batchnorm: bool = False, static_graph: bool = False) -> nn.Module:
    """`module` as this rank trains it: itself with one process; else inside DistributedDataParallel, which
    broadcasts rank 0's parameters and buffers now and averages the gradients during each backward. Without
    `static_graph`, every parameter that requires a gradient must take part in every step's forward (no
    `find_unused_parameters`: the continual methods' graphs use the whole student). `sync_batchnorm`: BatchNorm layers that train become SyncBatchNorm on CUDA (the
    global batch's statistics); torch has no CPU SyncBatchNorm, so gloo runs keep per-rank statistics.
    `static_graph`: DDP's option for graphs that are the same every step (the compression students: some parameters
    never used; not LwM, whose Grad-CAM it breaks: pipeline/continual/trainer.py)."""
    if world_size() == 1:
        return module
    if sync_batchnorm and device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, static_graph=static_graph)


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

    Every rank computes the same loss of the gathered batch, and DDP takes the mean of the ranks' gradients
    (it divides each rank's by the world size before summing them): the rows of rank r reach weights through
    rank r's graph alone, so their share of the mean would be 1 / world of their true gradient, while the
    inputs every rank computes alike (class text features) count in full. Multiplying the local rows' gradient
    by the world size makes the mean exact. No communication in backward: the other ranks' rows are constants
    here."""

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
