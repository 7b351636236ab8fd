"""Stage `target`: the compression branch's classification task (`target.task`) under data/target."""
from __future__ import annotations

from dataclasses import replace

from pipeline import io, paths
from pipeline.data import loader, save_task
from pipeline.data.sources import materialise
from pipeline.data.benchmarks import build_task
from pipeline.stages.common import load_params, stage


@stage
def main(argv):
    params = load_params()
    t = params.target
    loader.configure(params.runtime.workers, pin_memory=False)
    task = build_task(params.data, t.task, t.train_per_class, t.test_per_class, t.imbalance, benchmark=t.benchmark,
                      root=t.root)
    # The compression branch trains on a small target held in memory (crops and flips index it as a tensor).
    task = replace(task, train_images=materialise(task.train_images), test_images=materialise(task.test_images))
    with io.atomic_dir(paths.TARGET) as folder:
        save_task(task, folder)
    print(f"target {t.task}: {len(task.classes)} classes, {len(task.train_labels)} train / {len(task.test_labels)} test images")


if __name__ == "__main__":
    main()
