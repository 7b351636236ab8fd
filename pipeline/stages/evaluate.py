"""Stage `evaluate`: the accuracy matrix, Transfer / Average / Last, and plots."""
from __future__ import annotations

import numpy as np

from pipeline import io, metrics, paths, plots
from pipeline.params import E0
from pipeline.stages.common import load_params, stage
from pipeline.errors import InputError


@stage
def main(argv):
    params = load_params()
    names = params.task_names
    zero_shot = io.read_json(paths.ZERO_SHOT)
    rows = [io.read_json(paths.task_row(name)) for name in names]
    methods = sorted({row["method"] for row in rows})
    if len(methods) != 1:
        raise InputError(f"{paths.TASK_ROWS}: tasks were trained with different methods {methods}; rerun `dvc repro`")
    matrix = np.array([[zero_shot["tasks"][t]["accuracy"] for t in names]] + [[row["accuracy"][t] for t in names] for row in rows])
    summary = metrics.summary(matrix)
    io.write_json(paths.CL, {"method": methods[0], **summary, "zero_shot": zero_shot})
    io.write_json(paths.MATRIX, {"rows": [E0, *names], "columns": names, "matrix": matrix.tolist()})
    title = f"{methods[0]}: transfer {summary['transfer']:.1f}, average {summary['average']:.1f}, last {summary['last']:.1f}"
    plots.heatmap(matrix, [E0, *names], names, paths.PLOTS / "accuracy_matrix.png", title)
    plots.task_curves(matrix, [E0, *names], names, paths.PLOTS / "task_accuracy.png", title)
    print(title)


if __name__ == "__main__":
    main()
