"""Stage `student_alone`: the student of `distill.student`, trained like the distilled one (seed, initial
weights, batches, flips, budget) on the labels alone: the baseline every distillation method is measured
against. It reads no `distill.method` key, so DVC trains it once per student and seed."""
from __future__ import annotations

from pipeline import io, paths, runtime
from pipeline.compression.run import train_and_test
from pipeline.data import load_task
from pipeline.stages.common import live, load_params, setup_runtime, stage


@stage
def main(argv):
    params = load_params("timm")
    dp = params.distill
    task = load_task(paths.TARGET)
    device = setup_runtime(params.runtime, runtime.stable_seed(dp.seed, "distill"))
    with live(paths.STUDENT_ALONE_LIVE) as logger:
        summary, per_class, cost = train_and_test(params, task, None, device, paths.STUDENT_ALONE, logger,
                                            desc=f"alone {dp.student}")
    io.write_json(paths.STUDENT_ALONE_METRICS, {"task": task.name, **summary, "per_class": per_class})
    io.write_json(paths.STUDENT_ALONE_COST, cost)
    print(f"student {dp.student} alone: {summary['accuracy']:.2f}%")


if __name__ == "__main__":
    main()
