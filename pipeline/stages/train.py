"""Stage `train@<task>`: train one task from the previous model with the configured continual method, then
evaluate the new model on every task (one row of the accuracy matrix).

With `runtime.nproc` > 1 or `runtime.nodes` > 1 the stage re-executes itself under torchrun
(pipeline/distributed.py): every worker trains on its share of each batch through DistributedDataParallel;
rank 0 alone logs, evaluates and writes the outputs."""
from __future__ import annotations

import contextlib
import time

from pipeline import distributed, io, paths, runtime
from pipeline.continual import get_method
from pipeline.continual.assemble import assemble
from pipeline.continual.trainer import train_task
from pipeline.data.benchmarks import load_tasks
from pipeline.evaluation import accuracy_row
from pipeline.models import clip as clip_lib
from pipeline.params import E0
from pipeline.stages.common import live, load_params, setup_runtime, stage
from pipeline.errors import InputError

# Read by this stage, as in dvc.yaml; runtime.workers too, but it never changes an output (the loader's batches
# are the same for any count), so it is no DVC param: changing it reruns nothing. Nor are runtime.nodes,
# runtime.node_rank and runtime.rdzv_endpoint (where the processes run, not what they compute).
PARAMS = ["loss", "train", "eval.batch_size", "runtime.device", "runtime.threads", "runtime.precision", "runtime.nproc", "tasks"]


@stage
def main(argv):
    if len(argv) != 1:
        raise InputError("usage: python -m pipeline.stages.train TASK")
    params, name = load_params("open_clip"), argv[0]
    if name not in params.tasks:
        raise InputError(f"tasks.{name}: no such task in params.yaml")
    if distributed.wanted(params.runtime):
        distributed.relaunch(params.runtime, "pipeline.stages.train", argv)  # params checked: no return
    # A torch seed per rank (one process: the seed it always had); the batch order has its own, the same on all.
    device = setup_runtime(params.runtime, distributed.rank_seed(runtime.stable_seed(params.train.seed, name)))
    device = distributed.init(device, params.runtime.nproc, params.runtime.nodes)  # one process: `device` as it was
    try:
        train(params, name, device)
    finally:
        distributed.finish()


def train(params, name: str, device) -> None:
    """Train task `name` in this process (one of several under torchrun) and, on rank 0, write its outputs."""
    tasks = load_tasks(params.task_names)
    student = clip_lib.load(paths.model_dir(params.tasks[name].prev))
    student.model.to(device)
    cls = get_method(params.train.method)
    # What the method reads of the earlier stages' outputs, and nothing more (pipeline/continual/assemble.py).
    reads = cls.reads(params.loss, first=params.tasks[name].prev == E0)
    method = cls(assemble(params, name, tasks, student, device, reads))
    start = time.perf_counter()
    main_rank = distributed.is_main()
    with (live(paths.train_live(name)) if main_rank else contextlib.nullcontext()) as logger:
        final = train_task(method, logger)
    if not main_rank:  # its weights equal rank 0's: nothing of its own to evaluate or write
        return
    seconds = round(time.perf_counter() - start, 1)
    row = accuracy_row(student, tasks, params.eval.batch_size, params.runtime.precision)
    # No wall time here: the checkpoint's bytes (and so its DVC hash) must depend on the params only.
    meta = {"name": name, "prev": params.tasks[name].prev, "method": method.name, "final_loss": final}
    with io.atomic_dir(paths.model_dir(name)) as folder:  # no method_state left by another method
        clip_lib.save(student, folder, meta | {"params": params.select(PARAMS)})
        if method.state():
            io.save_tensors(folder / paths.method_state(name).name, method.state())
    io.write_json(paths.task_row(name), {"task": name, "method": method.name, "accuracy": row})
    # Kept apart from the accuracy row, which must depend on the params only (byte-identical reruns).
    io.write_json(paths.task_cost(name), {"seconds": seconds, "peak_memory_mb": runtime.peak_memory_mb(device)})
    print(f"after {name}: " + ", ".join(f"{n} {a:.1f}%" for n, a in row.items()) + f" ({seconds}s training)")


if __name__ == "__main__":
    main()
