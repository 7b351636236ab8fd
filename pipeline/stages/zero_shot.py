"""Stage `zero_shot`: E0's zero-shot accuracy on every task of the chain (row 0 of the accuracy matrix).

A stage apart from `pretrain`, so that E0 depends only on what it is made of (the corpus, the model and the
pretrain params): a new task chain reruns this evaluation and restores E0 from DVC's cache."""
from __future__ import annotations

from pipeline import io, metrics, paths
from pipeline.params import E0
from pipeline.data.benchmarks import load_tasks
from pipeline.evaluation import accuracy_row
from pipeline.models import clip as clip_lib
from pipeline.stages.common import load_params, setup_runtime, stage


@stage
def main(argv):
    params = load_params("open_clip")
    device = setup_runtime(params.runtime, 0)
    tasks = load_tasks(params.task_names)
    e0 = clip_lib.freeze(clip_lib.load(paths.model_dir(E0)))
    e0.model.to(device)
    row = accuracy_row(e0, tasks, params.eval.batch_size, params.runtime.precision)
    chance = {name: round(100.0 / len(task.classes), 4) for name, task in tasks.items()}
    per_task = {name: {"accuracy": row[name], "chance": chance[name]} for name in row}
    # Transfer is undefined for a one-task chain (no later task): null in the JSON (io.write_json)
    io.write_json(paths.ZERO_SHOT, {"transfer": round(metrics.zero_shot_transfer(list(row.values())), 4), "tasks": per_task})
    print("E0 zero-shot: " + ", ".join(f"{n} {a:.1f}% (chance {chance[n]:.1f})" for n, a in row.items()))


if __name__ == "__main__":
    main()
