"""`make bench-steps`: the training step time of every method of the compression branch, each student's and the
cohort's, measured in one process, interleaved: metrics/bench_steps.json. A command, not a stage (timings vary
from run to run).

The comparison tables' step times are each run's wall time over its steps: runs taken one after another in the
DVC queue, minutes apart, progress bar and DVCLive logging included. That is the cost a user pays, but drift
between runs (other load on the machine, its clock) lands in their ratios: the same cohort alone took 122, 132
and 148 ms a step at seeds 0-2 of one queue. Here the methods compared are built side by side and stepped in
turns, so every ratio is measured in one run:
- distill: each student's `compare.distill_variants` (the names' prefix: `mbv3`, `shuffle`) and the same
  student alone, with `compare.distill_setting`'s `distill.*` keys, on the workspace's target and CNN teacher;
- cohort: `compare.cohort_variants` with `compare.cohort_setting`'s `cohort.*` keys.
After `--warmup` steps each, `--rounds` rounds time one `method.step` of every method (the order rotated each
round, so none always follows the same one); the median is its step time. Work a method does every so many
steps is timed apart, `--repeats` times, and amortised as in training: channel matching's rematching (the
distance matrix and the assignment, every `rematch_every` epochs of the compare's training set) and L-MCL's
meta-optimisation (every `meta_every` steps)."""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from pipeline import io, paths, runtime
from pipeline.compression import data as D
from pipeline.params.compression import ALONE
from pipeline.compression.run import cohort_method, student_method
from pipeline.compression.teachers import load_teacher
from pipeline.compression.trainer import prepare
from pipeline.training import Trainer
from pipeline.params import LIBRARIES
from pipeline.data import load_task
from pipeline.errors import InputError
from pipeline.stages.common import load_params, setup_runtime, stage
from pipeline.tools.machine import machine

BRANCHES = ("distill", "cohort")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def quartiles(times: list[float]) -> dict:
    q1, median, q3 = statistics.quantiles(times, n=4)
    return {"median_ms": round(1000 * median, 2), "q1_ms": round(1000 * q1, 2), "q3_ms": round(1000 * q3, 2)}


def periodic_work(run: Trainer, images: int) -> tuple[str, Callable[[], object], int] | None:
    """What a method does every so many steps besides its step, as (name, a call doing it once, the steps
    between two): channel matching's rematching, L-MCL's meta-optimisation; None for the others."""
    method, recipe = run.method, run.method.ctx.params
    if method.name == "channel_matching":
        return "rematch", method.match, D.steps_for(images, recipe.batch_size, 1) * recipe.matching.rematch_every
    if method.name == "lmcl":
        batch = run.batch(next(run.order))
        return "meta_step", lambda: method.meta_step(batch), recipe.lmcl.meta_every
    return None


def bench(runs: dict[str, Trainer], warmup: int, rounds: int, repeats: int, images: int, baseline: str) -> dict:
    """Median step time of every run, stepped in turns; periodic work timed apart and amortised; `per_<baseline>`:
    each amortised time over the run `baseline`'s."""
    periodic = {}
    for name, run in runs.items():
        run.method.on_epoch(0)  # the first matching (and the teacher's cached maps) before any timing
        work = periodic_work(run, images)
        if work is not None:
            periodic[name] = (work[0], [timed(work[1]) for _ in range(repeats)], work[2])
    # Step numbers that are no method's periodic step (L-MCL meta-optimises inside `step` at multiples of
    # meta_every): that work is timed apart above.
    numbers = (i for i in range(1, 10**9) if all(i % every for _, _, every in periodic.values()))
    step_numbers = [next(numbers) for _ in range(warmup + rounds)]

    def step(run: Trainer, i: int) -> float:
        batch = run.batch(next(run.order))
        return timed(lambda: run.method.step(i, batch, run.optimizer))

    for run in runs.values():
        for i in step_numbers[:warmup]:
            step(run, i)
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r, i in enumerate(step_numbers[warmup:]):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(step(runs[name], i))
    results = {}
    for name, run in runs.items():
        entry = {"method": run.method.name, **quartiles(times[name])}
        if name in periodic:
            what, spent, every = periodic[name]
            entry |= {f"{what}_ms": round(1000 * statistics.median(spent), 2), "every_steps": every}
            entry["amortised_ms"] = round(entry["median_ms"] + entry[f"{what}_ms"] / every, 2)
        else:
            entry["amortised_ms"] = entry["median_ms"]
        results[name] = entry
    base = results[baseline]["amortised_ms"]
    for entry in results.values():
        entry[f"per_{baseline}"] = round(entry["amortised_ms"] / base, 3)
    return results


def prefixes(variants: dict[str, dict]) -> list[str]:
    """The students of compare.distill_variants: the names' prefixes before the first `_` (mbv3, shuffle)."""
    return list(dict.fromkeys(name.split("_")[0] for name in variants))


def print_table(title: str, results: dict) -> None:
    print(title)
    for name, e in results.items():
        extra = "".join(f" + {k[:-3]} {v:.0f} ms / {e['every_steps']} steps" for k, v in e.items()
                        if k.endswith("_ms") and k not in ("median_ms", "q1_ms", "q3_ms", "amortised_ms"))
        ratio = next(f" = {v:.2f}x {k[4:]}" for k, v in e.items() if k.startswith("per_"))
        print(f"  {name:24s} step {e['median_ms']:7.1f} ms (IQR {e['q1_ms']:.1f}-{e['q3_ms']:.1f}){extra}{ratio}")


@stage
def main(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_steps", description=__doc__.splitlines()[0])
    parser.add_argument("--branches", nargs="*", choices=BRANCHES, default=list(BRANCHES))
    parser.add_argument("--students", nargs="*", help="prefixes of the compare.distill_variants to time "
                                                      "(default: every one, e.g. mbv3 shuffle)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=40, help="timed steps of each method (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each method's periodic work")
    args = parser.parse_args(argv)
    if args.rounds < 2 or args.warmup < 0 or args.repeats < 1:
        parser.error("--rounds must be >= 2 (quartiles), --warmup >= 0, --repeats >= 1")
    params = load_params(*LIBRARIES)
    cmp = params.compare
    known = prefixes(cmp.distill_variants)
    chosen = args.students or known
    for prefix in chosen:
        if prefix not in known:
            raise InputError(f"--students {prefix}: no compare.distill_variants named {prefix}_*; have {', '.join(known)}")
    # A CPU benchmark: every method built below reads runtime.precision too (pipeline/tools/bench_gpu.py times GPUs).
    params = params.model_copy(update={"runtime": params.runtime.model_copy(update={"device": "cpu", "precision": "fp32"})})
    device = setup_runtime(params.runtime, 0)
    task = load_task(paths.TARGET)
    # The compare's training set (its `target.train_per_class`), not the workspace's, sets the steps between two
    # rematchings; a step's own cost does not depend on the set's size.
    images = len(task.classes) * cmp.distill_setting.get("target.train_per_class", params.target.train_per_class)
    out = {"setup": {"task": task.name, "rounds": args.rounds, "warmup": args.warmup, "repeats": args.repeats,
                     "threads": params.runtime.threads, "torch": torch.__version__, "machine": machine()}}
    if "distill" in args.branches:
        setting = {k: v for k, v in cmp.distill_setting.items() if k.startswith("distill.")}
        teacher = load_teacher(params, task, device)
        out["distill"] = {"teacher": teacher.name, "images_per_epoch": images, "students": {}}
        for prefix in chosen:
            configs = {name: params.with_overrides({**setting, **sets}, source=f"compare.distill_variants.{name}")
                       for name, sets in cmp.distill_variants.items() if name.split("_")[0] == prefix}
            first = next(iter(configs.values()))
            runs = {ALONE: prepare(student_method(first, task, None, device))} | \
                {name: prepare(student_method(p, task, teacher, device)) for name, p in configs.items()}
            fitnet = next((n for n, r in runs.items() if r.method.name == "fitnet"), ALONE)
            results = bench(runs, args.warmup, args.rounds, args.repeats, images, fitnet)
            out["distill"]["students"][prefix] = {"student": first.distill.student,
                                                  "batch_size": first.distill.batch_size, "variants": results}
            print_table(f"{first.distill.student} (distill)", results)
            del runs  # the teacher's cached maps of each feature method
    if "cohort" in args.branches:
        setting = {k: v for k, v in cmp.cohort_setting.items() if k.startswith("cohort.")}
        configs = {name: params.with_overrides({**setting, **sets}, source=f"compare.cohort_variants.{name}")
                   for name, sets in cmp.cohort_variants.items()}
        runs = {name: prepare(cohort_method(p, task, device)) for name, p in configs.items()}
        baseline = next((n for n, p in configs.items() if p.cohort.method == ALONE), next(iter(configs)))
        results = bench(runs, args.warmup, args.rounds, args.repeats, images, baseline)
        first = next(iter(configs.values()))
        out["cohort"] = {"networks": first.cohort.networks, "batch_size": first.cohort.batch_size, "variants": results}
        print_table(f"cohort of {', '.join(first.cohort.networks)}", results)
    io.write_json(paths.BENCH_STEPS, out)


if __name__ == "__main__":
    main()
