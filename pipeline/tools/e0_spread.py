"""`python -m pipeline.tools.e0_spread`: how far E0's zero-shot accuracy moves over pretraining seeds. Writes
metrics/e0_spread.json (or --out). This is a command, not a stage.

E0 is pretrained once per seed of `--seeds` (default 0-4), each time as the pretrain stage does it: the
params.yaml recipe with `pretrain.seed` set, plus `--set` overrides, which try another recipe. The tasks and
the caption corpus are built in memory from params.yaml's data section, so they are the same for every seed
(`data.seed` is not changed) and no stage output is read. After each run, E0's zero-shot accuracy on every
task and its Transfer (the mean over tasks 2..T, as in metrics/zero_shot.json) are evaluated. The JSON gives
each seed's figures and, over the seeds, the mean, sample std, min, max and range (max - min) of Transfer and
of the mean over all tasks. It also records the machine (CPU, torch, kernel capability), since E0's float
results depend on the CPU's kernels.

    python -m pipeline.tools.e0_spread                                   # params.yaml's recipe, seeds 0-4 (5 x ~5 min)
    python -m pipeline.tools.e0_spread --set pretrain.steps=1800 --out metrics/e0_spread-steps1800.json
    python -m pipeline.tools.e0_spread --set pretrain.steps=1800 --out metrics/e0_spread-steps1800.json --resume

`--resume` keeps the seeds `--out` already holds when it was written with the same recipe on the same machine
(a screen on two seeds grows into the 5-seed run without repeating them); the others are pretrained.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import yaml

from pipeline import io, metrics, paths
from pipeline.params import ParamsError
from pipeline.data.benchmarks import build_corpus, build_task
from pipeline.evaluation import accuracy_row
from pipeline.models import clip as clip_lib
from pipeline.pretraining import pretrain
from pipeline.stages.common import load_params, setup_runtime, stage
from pipeline.tools.machine import machine

OUT = paths.METRICS / "e0_spread.json"


def spread(values: list[float]) -> dict:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), 2), "std": round(float(v.std(ddof=1)) if len(v) > 1 else 0.0, 2),
            "min": round(float(v.min()), 2), "max": round(float(v.max()), 2), "range": round(float(v.max() - v.min()), 2)}


def recipe(params) -> dict:
    """What decides E0 but the seed: the model, the pretrain section and the data that builds the corpus."""
    pretrain = params.pretrain.model_dump(mode="json")
    pretrain.pop("seed")
    return {"model": params.model.model_dump(mode="json"), "pretrain": pretrain,
            "data": params.data.model_dump(mode="json"), "threads": params.runtime.threads}


def previous_rows(path: str, wanted: dict, seeds: list[int]) -> dict[int, dict[str, float]]:
    """The per-task rows of `seeds` that `path` holds, if it was written with the same recipe on this machine
    (E0's floats depend on the CPU's kernels, so another machine's rows would not be this run's)."""
    try:
        old = io.read_json(path)
    except FileNotFoundError:
        return {}
    if old.get("recipe") != wanted or old.get("machine") != machine():
        raise ParamsError(f"--resume: {path} was not written with this recipe (params.yaml with --set) on this "
                          f"machine ({machine()['cpu']}): drop --resume or give another --out")
    return {int(s): row["tasks"] for s, row in old["per_seed"].items() if int(s) in seeds}


@stage
def main(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.e0_spread", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe change (repeatable)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--resume", action="store_true", help="keep the seeds --out holds (same recipe, same machine)")
    args = parser.parse_args(argv)
    sets = {}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq or "." not in key:
            raise ParamsError(f"--set: {item!r} must be a dotted key and a value, e.g. pretrain.steps=1800")
        sets[key] = yaml.safe_load(value)
    base = load_params("open_clip")
    if base.model.pretrained is not None:
        raise ParamsError(f"model.pretrained: {base.model.pretrained!r}: E0 is loaded, not pretrained; nothing to spread")
    runs = {s: base.with_overrides({**sets, "pretrain.seed": s}, source="--set") for s in args.seeds}  # all checked first
    first = next(iter(runs.values()))  # the runs differ in pretrain.seed alone: one corpus and task set for all,
    names = first.task_names           # built with --set's data keys (data.corpus_templates, data.corpus_size)
    tasks = {n: build_task(first.data, n) for n in names}
    corpus = build_corpus(first.data, names)
    rows = previous_rows(args.out, recipe(first), args.seeds) if args.resume else {}
    losses: dict[int, float] = {}
    for seed, params in runs.items():
        if seed in rows:
            print(f"seed {seed}: kept from {args.out}", flush=True)
            continue
        start = time.perf_counter()
        device = setup_runtime(params.runtime, params.pretrain.seed)  # as the pretrain stage: init, then training
        clip = clip_lib.build(params.model.arch, params.data.image_size)
        losses[seed] = pretrain(clip, corpus, params.pretrain, device, precision=params.runtime.precision)
        rows[seed] = accuracy_row(clip, tasks, params.eval.batch_size, params.runtime.precision)
        print(f"seed {seed} ({time.perf_counter() - start:.0f} s): Transfer "
              f"{metrics.zero_shot_transfer(list(rows[seed].values())):.2f}", flush=True)
        write(args.out, argv, args.seeds, sets, recipe(first), names, rows, losses)  # a stopped run keeps its seeds
    summary = write(args.out, argv, args.seeds, sets, recipe(first), names, rows, losses)
    print(f"E0 Transfer over seeds {sorted(rows)}: {summary['transfer']}; wrote {args.out}")


def write(out: str, argv: list[str], planned: list[int], sets: dict, used: dict, names: list[str],
          rows: dict[int, dict], losses: dict[int, float]) -> dict:
    """The file for the seeds done so far (`seeds`; `planned`: the run's --seeds), with their spread."""
    done = sorted(rows)
    transfer = {s: round(metrics.zero_shot_transfer(list(rows[s].values())), 4) for s in done}
    mean_all = {s: round(float(np.mean(list(rows[s].values()))), 4) for s in done}
    summary = {
        "seeds": done, "planned": planned, "set": sets, "recipe": used, "tasks": names,
        "per_seed": {str(s): {"transfer": transfer[s], "mean_all_tasks": mean_all[s], "tasks": rows[s],
                              **({"final_loss": round(losses[s], 4)} if s in losses else {})} for s in done},
        "transfer": spread(list(transfer.values())), "mean_all_tasks": spread(list(mean_all.values())),
        "per_task": {n: spread([rows[s][n] for s in done]) for n in names},
        "machine": machine(),
        "command": "python -m pipeline.tools.e0_spread " + " ".join(argv)}
    io.write_json(out, summary)
    return summary

if __name__ == "__main__":
    main()
