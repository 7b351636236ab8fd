"""Stage `target`: the compression branch's classification task (`target.task`) under data/target."""
from __future__ import annotations

from pipeline import io, paths
from pipeline.data import save_task
from pipeline.data.benchmarks import build_task
from pipeline.stages.common import load_params, stage


@stage
def main(argv):
    params = load_params()
    t = params.target
    task = build_task(params.data, t.task, t.train_per_class, t.test_per_class, t.imbalance, benchmark=t.benchmark)
    with io.atomic_dir(paths.TARGET) as folder:
        save_task(task, folder)
    print(f"target {t.task}: {len(task.classes)} classes, {len(task.train_labels)} train / {len(task.test_labels)} test images")


if __name__ == "__main__":
    main()
