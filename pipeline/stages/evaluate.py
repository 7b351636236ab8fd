"""Stage `evaluate`: the accuracy matrix, Transfer / Average / Last, and plots; and the outputs of tasks no
longer in the chain removed (it runs on every change of the chain, after every train@<task>)."""
from __future__ import annotations

import shutil

import numpy as np

from pipeline import io, metrics, paths, plots
from pipeline.params import E0
from pipeline.stages.common import load_params, stage
from pipeline.errors import InputError


@stage
def main(argv):
    params = load_params()
    names = params.task_names
    remove_stale(names)
    zero_shot = io.read_json(paths.ZERO_SHOT)
    rows = [io.read_json(paths.task_row(name)) for name in names]
    methods = sorted({row["method"] for row in rows})
    if len(methods) != 1:
        raise InputError(f"{paths.TASK_ROWS}: tasks were trained with different methods {methods}; rerun `dvc repro`")
    matrix = np.array([[zero_shot["tasks"][t]["accuracy"] for t in names]] + [[row["accuracy"][t] for t in names] for row in rows])
    summary = metrics.summary(matrix)
    io.write_json(paths.CL, {"method": methods[0], **summary, "zero_shot": zero_shot})
    io.write_json(paths.MATRIX, {"rows": [E0, *names], "columns": names, "matrix": matrix.tolist()})
    title = f"{methods[0]}: " + ", ".join(f"{k} {summary[k]:.1f}" for k in ("transfer", "average", "last"))
    plots.heatmap(matrix, [E0, *names], names, paths.PLOTS / "accuracy_matrix.png", title)
    plots.task_curves(matrix, [E0, *names], names, paths.PLOTS / "task_accuracy.png", title)
    print(title)


def remove_stale(chain: list[str]) -> None:
    """Remove what train@<task> left of tasks not in `chain`, saying what went: stale rows would otherwise sit
    among the metrics (`dvc metrics show`) and stale models under models/, unknown to DVC. Before reading the
    rows, so this stage's dependency metrics/tasks holds the chain's rows alone when DVC records it."""
    stale = paths.stale_task_outputs(chain)
    for found in stale.values():
        for path in found:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if stale:
        print(f"removed the outputs of tasks no longer in the chain: " + "; ".join(
            f"{name} ({', '.join(p.as_posix() for p in found)})" for name, found in stale.items()))


if __name__ == "__main__":
    main()
