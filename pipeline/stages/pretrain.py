"""Stage `pretrain`: E0, trained contrastively on the caption corpus or loaded; its zero-shot row."""
from __future__ import annotations

import time

from pipeline import io, metrics, paths
from pipeline.params import E0
from pipeline.data import load_corpus
from pipeline.data.benchmarks import load_tasks
from pipeline.evaluation import accuracy_row
from pipeline.models import clip as clip_lib
from pipeline.pretraining import pretrain
from pipeline.stages.common import live, load_params, setup_runtime, stage

# read by this stage, as in dvc.yaml (runtime but nproc: train@*'s alone)
PARAMS = ["model", "pretrain", "eval.batch_size", "runtime.device", "runtime.threads", "runtime.precision", "tasks"]


@stage
def main(argv):
    params = load_params("open_clip")
    device = setup_runtime(params.runtime, params.pretrain.seed)
    tasks = load_tasks(params.task_names)
    start = time.perf_counter()
    if params.model.pretrained is None:
        corpus = load_corpus(paths.CORPUS, needed_by="model.pretrained: null")
        clip = clip_lib.build(params.model.arch, params.data.image_size)
        with live(paths.PRETRAIN_LIVE) as logger:
            pretrain(clip, corpus, params.pretrain, device, logger, precision=params.runtime.precision)
    else:
        clip = clip_lib.build(params.model.arch, params.data.image_size, params.model.pretrained)
        clip.model.to(device)
    row = accuracy_row(clip, tasks, params.eval.batch_size, params.runtime.precision)
    # No wall time in the checkpoint's JSON: it would change the output's hash on every run, and DVC would
    # then re-run every downstream stage although the weights are byte-identical.
    seconds = time.perf_counter() - start
    meta = {"name": E0, "source": params.model.pretrained or "pretrain stage"}
    with io.atomic_dir(paths.model_dir(E0)) as folder:
        clip_lib.save(clip, folder, meta | {"params": params.select(PARAMS)})
    chance = {name: round(100.0 / len(task.classes), 4) for name, task in tasks.items()}
    per_task = {name: {"accuracy": row[name], "chance": chance[name]} for name in row}
    io.write_json(paths.ZERO_SHOT, {"transfer": round(metrics.zero_shot_transfer(list(row.values())), 4), "tasks": per_task})
    print(f"E0 ({seconds:.0f}s) zero-shot: " + ", ".join(f"{n} {a:.1f}% (chance {chance[n]:.1f})" for n, a in row.items()))


if __name__ == "__main__":
    main()
