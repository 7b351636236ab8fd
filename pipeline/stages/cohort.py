"""Stage `cohort`: online distillation, a cohort of networks (`cohort.networks`) trained together by
`cohort.method` (mcl, lmcl, dml) with no pretrained teacher, or each network alone (`alone`: the same initial
weights, batches and budget). Writes every network's accuracy and their ensemble's."""
from __future__ import annotations

from pipeline import io, paths, runtime
from pipeline.compression.run import train_cohort
from pipeline.data import load_task
from pipeline.stages.common import live, load_params, setup_runtime, stage


@stage
def main(argv):
    params = load_params("timm")
    cp = params.cohort
    task = load_task(paths.TARGET)
    device = setup_runtime(params.runtime, runtime.stable_seed(cp.seed, "cohort"))
    with live(paths.COHORT_LIVE) as logger:
        summary, per_class, cost = train_cohort(params, task, device, paths.COHORT, logger)
    io.write_json(paths.COHORT_METRICS, {"task": task.name, **summary})
    io.write_json(paths.COHORT_PER_CLASS, per_class)
    io.write_json(paths.COHORT_COST, cost)
    each = ", ".join(f"{n} {a:.2f}%" for n, a in zip(cp.networks, summary["network_accuracy"]))
    print(f"cohort {cp.method}: {each}; ensemble {summary['ensemble_accuracy']:.2f}%")


if __name__ == "__main__":
    main()
