"""Stage `train@<task>`: train one task from the previous model with the configured continual method, then
evaluate the new model on every task (one row of the accuracy matrix)."""
from __future__ import annotations

import time

from pipeline import io, paths, runtime
from pipeline.continual import get_method
from pipeline.continual.base import TaskContext
from pipeline.continual.trainer import train_task
from pipeline.data.benchmarks import load_tasks
from pipeline.evaluation import accuracy_row
from pipeline.models import clip as clip_lib
from pipeline.stages.common import live, load_params, stage
from pipeline.errors import InputError

PARAMS = ["loss", "train", "eval.batch_size", "runtime", "tasks"]  # read by this stage, as in dvc.yaml


@stage
def main(argv):
    if len(argv) != 1:
        raise InputError("usage: python -m pipeline.stages.train TASK")
    params, name = load_params("open_clip"), argv[0]
    if name not in params.tasks:
        raise InputError(f"tasks.{name}: no such task in params.yaml")
    device = runtime.setup(params.runtime, runtime.stable_seed(params.train.seed, name))
    tasks = load_tasks(params.task_names)
    student = clip_lib.load(paths.model_dir(params.tasks[name].prev))
    student.model.to(device)
    method = get_method(params.train.method)(TaskContext(params, name, tasks[name], student, device, all_tasks=tasks))
    start = time.perf_counter()
    with live(paths.train_live(name)) as logger:
        final = train_task(method, logger)
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
