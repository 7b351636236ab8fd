"""`python -m pipeline.tools.room` (`make room`): the room probe, whether a target leaves distillation room to show.

Before any distillation method runs on a target, its recipe is fixed from the runs that carry no method: the CNN
teacher, each student of `compare.distill_variants` alone, and the cohort of `cohort.networks` alone, every one
at each seed of `compare.seeds`, with `compare.room_setting` over the branch's setting (exactly the params the
tables' runs get: `python -m pipeline.tools.compare --branch distill|cohort --set KEY=VALUE ... --tag TAG`, printed
by `--commands`). Every run goes through the functions the stages `teacher`, `student_alone` and `cohort` call,
seeded as they seed them, so a table's runs reproduce the probe's on the same machine kind.

The criterion (docs/notes/2026-12-06-fashion-mnist-room.md), checked here on the figures: a student alone is
steady (sample std over the seeds at most STEADY points) and at least ROOM points under its teacher
(distillation); each network of the cohort alone is steady, at least ROOM points under 100 %, and under the
cohort's ensemble (online distillation).

Each run's result is written to the output (metrics/room_fashion_mnist.json) as soon as it ends, so a stopped
probe starts again where it stopped; a run is reused (from the output, or from another process's with --merge)
only when the sections it reads are what they would be now."""
from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path

from pipeline import io, paths, runtime
from pipeline.tools import compare
from pipeline.tools.compare_tables import mean_std
from pipeline.params import LIBRARIES, Params
from pipeline.stages.common import load_params, setup_runtime, stage

ROOM = paths.METRICS / "room_fashion_mnist.json"
STEADY = 1.0  # points: the largest sample std over seeds of a steady run
ROOM_POINTS = 4.0  # points: the least gap under the teacher (distillation) or under 100 % (cohort)


def student_variants(params: Params, extra: dict | None = None) -> dict[str, str]:
    """One distill variant per distinct student (its student and stem stride, as the runs get them: `--set` over
    the variant's own): label -> variant name."""
    seen = {}
    for name, sets in params.compare.distill_variants.items():
        sets = {**sets, **(extra or {})}
        label = f"{sets.get('distill.student', params.distill.student)} stem {sets.get('distill.stem_stride')}"
        seen.setdefault(label, name)
    return seen


def plan(params: Params, seeds: list[int], extra: dict) -> list[tuple[str, str, int, dict]]:
    """(row, kind, seed, overrides) of every run: seed by seed, so stopping early leaves whole seeds."""
    distill, cohort = compare.BRANCHES["distill"], compare.BRANCHES["cohort"]
    runs = []
    for seed in seeds:
        # Seeded as the tables' runs are (compare.DISTILL_SEEDS, the cohort's seed keys): a seed redraws the
        # target's images too. (The committed probe of 2026-12-06 ran before that, at data.seed 0 for every seed.)
        runs.append(("teacher", "teacher", seed, {**distill.setting(params), **extra,
                                                  **{key: seed for key in distill.seed_keys(params)}}))
        for label, variant in student_variants(params, extra).items():
            runs.append((f"alone {label}", "student", seed, compare.overrides(params, variant, seed, distill, extra)))
        sets = {**cohort.setting(params), **extra, "cohort.method": "alone",
                **{key: seed for key in cohort.seed_keys(params)}}
        runs.append(("cohort alone", "cohort", seed, sets))
    return runs


def run_one(p: Params, kind: str, task) -> dict:
    """One run as its stage trains it; returns its accuracies, parameters and cost."""
    from pipeline.compression.run import train_and_test, train_cohort, train_teacher

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "teacher":
            device = setup_runtime(p.runtime, runtime.stable_seed(p.teacher.seed, "teacher"))
            model, logged, accuracy, _ = train_teacher(p, task, device)
            out = {"accuracy": accuracy, "parameters": sum(q.numel() for q in model.parameters()),
                   "step_seconds": round(logged["step_seconds"], 5)}
        elif kind == "student":
            device = setup_runtime(p.runtime, runtime.stable_seed(p.distill.seed, "distill"))
            summary, _, cost = train_and_test(p, task, None, device, Path(tmp) / "student", desc="alone")
            out = {"accuracy": summary["accuracy"], "parameters": summary["parameters"], **cost}
        else:
            device = setup_runtime(p.runtime, runtime.stable_seed(p.cohort.seed, "cohort"))
            summary, _, cost = train_cohort(p, task, device, Path(tmp) / "cohort")
            out = {"accuracy": summary["accuracy"], "network_accuracy": summary["network_accuracy"],
                   "ensemble_accuracy": summary["ensemble_accuracy"], "parameters": summary["parameters"], **cost}
    return out | {"seconds": round(time.perf_counter() - start, 1)}


def target_of(p: Params):
    """The target task as the stage `target` builds it, built once per distinct target (and data) params."""
    from dataclasses import replace

    from pipeline.data.benchmarks import build_task
    from pipeline.data.sources import materialise

    t = p.target
    key = json.dumps([t.model_dump(mode="json"), p.data.image_size, p.data.seed, p.data.root], sort_keys=True)
    if key not in _TARGETS:
        task = build_task(p.data, t.task, t.train_per_class, t.test_per_class, t.imbalance, benchmark=t.benchmark,
                          root=t.root)
        _TARGETS[key] = replace(task, train_images=materialise(task.train_images),
                                test_images=materialise(task.test_images))
    return _TARGETS[key]


_TARGETS: dict = {}


def verdict(rows: dict[str, dict]) -> dict:
    """The criterion on the summary rows (module docstring): per student and for the cohort, each test and
    whether all pass."""
    out = {}
    teacher = rows.get("teacher")
    for row, entry in rows.items():
        if row.startswith("alone ") and teacher:
            tests = {"steady": entry["accuracy"]["std"] <= STEADY,
                     "room_under_teacher": teacher["accuracy"]["mean"] - entry["accuracy"]["mean"] >= ROOM_POINTS}
            out[row] = tests | {"gap": round(teacher["accuracy"]["mean"] - entry["accuracy"]["mean"], 2),
                                "meets": all(tests.values())}
    cohort = rows.get("cohort alone")
    if cohort:
        nets = cohort["network_accuracy"]
        tests = {"steady": all(n["std"] <= STEADY for n in nets),
                 "room_under_100": all(100 - n["mean"] >= ROOM_POINTS for n in nets),
                 "ensemble_above_networks": all(cohort["ensemble_accuracy"]["mean"] > n["mean"] for n in nets)}
        out["cohort alone"] = tests | {"meets": all(tests.values())}
    return out


def summarise(results: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Row -> mean ± std over its seeds of accuracy (and, for the cohort, of each network and the ensemble)."""
    rows = {}
    for row, by_seed in results.items():
        runs = [by_seed[s] for s in sorted(by_seed, key=int)]
        entry = {"seeds": sorted(int(s) for s in by_seed), "accuracy": mean_std([r["accuracy"] for r in runs]),
                 "parameters": runs[0]["parameters"], "seconds": mean_std([r["seconds"] for r in runs])}
        if "network_accuracy" in runs[0]:
            entry["network_accuracy"] = [mean_std([r["network_accuracy"][i] for r in runs])
                                         for i in range(len(runs[0]["network_accuracy"]))]
            entry["ensemble_accuracy"] = mean_std([r["ensemble_accuracy"] for r in runs])
        rows[row] = entry
    return rows


def table_commands(params: Params, extra: dict, tag: str) -> list[str]:
    """The commands that queue the tables on this setting (compare's --set sweep, one per branch). Queued
    experiments run in a clean copy of the git checkout, without the git-ignored data under target.root: the
    root goes in as an absolute path (a DVC dependency outside the repository)."""
    root = extra.get("target.root", params.target.root)
    extra = {**extra, "target.root": str(Path(root).resolve())}
    # The token branch has no setting of its own: its teacher must be the probe's, trained with the distill
    # setting's teacher keys.
    teacher = {k: v for k, v in compare.BRANCHES["distill"].setting(params).items() if k.startswith("teacher.")}
    commands = []
    for branch, sets in (("distill", extra), ("cohort", extra), ("token", {**teacher, **extra})):
        args = " ".join(compare.set_arg(k, v) for k, v in sets.items())
        commands.append(f"python -m pipeline.tools.compare --branch {branch} {args} --tag {tag}")
    return commands


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.room", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="*", type=int, help="override compare.seeds")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="on top of compare.room_setting (e.g. teacher.epochs=1 to time an epoch)")
    parser.add_argument("--out", type=Path, default=ROOM, help=f"the results (default {ROOM})")
    parser.add_argument("--only", nargs="*", help="rows to run (teacher, 'alone <student> stem <s>', cohort alone)")
    parser.add_argument("--merge", nargs="*", type=Path, default=[],
                        help="take the runs of these outputs of the same setting (seeds run in parallel processes)")
    parser.add_argument("--commands", action="store_true", help="print the commands that queue the tables, run nothing")
    parser.add_argument("--tag", default="fashion_mnist", help="the tables' --tag (with --commands)")
    args = parser.parse_args(argv)
    params = load_params(*LIBRARIES)
    extra = {**params.compare.room_setting, **compare.parse_sets(args.set, "probe")}
    if args.commands:
        print("\n".join(table_commands(params, extra, args.tag)))
        return
    seeds = args.seeds or params.compare.seeds
    runs = plan(params, seeds, extra)
    for row, _, seed, sets in runs:  # every run's params valid before the first (long) one
        params.with_overrides(sets, source=f"room probe {row} seed {seed}")
    wanted = {(row, seed): (kind, sets) for row, kind, seed, sets in runs}
    results: dict[str, dict] = {}
    for earlier in ([args.out] if args.out.is_file() else []) + list(args.merge):
        for row, by_seed in reusable(params, io.read_json(earlier), wanted).items():
            results.setdefault(row, {}).update(by_seed)
    command = " ".join(["python -m pipeline.tools.room", *(f"--set {s}" for s in args.set),
                        *(["--only", *(shlex.quote(r) for r in args.only)] if args.only else []),
                        *(["--merge", *map(str, args.merge)] if args.merge else []),
                        *(["--seeds", *map(str, seeds)] if args.seeds else []),
                        *(["--out", str(args.out)] if args.out != ROOM else [])])
    for row, kind, seed, sets in runs:
        if str(seed) in results.get(row, {}) or (args.only and row not in args.only):
            continue
        p = params.with_overrides(sets, source=f"room probe {row}")
        result = run_one(p, kind, target_of(p))
        results.setdefault(row, {})[str(seed)] = result
        print(f"{row} seed {seed}: {result['accuracy']:.2f} % in {result['seconds']:.0f} s", flush=True)
        write(args.out, extra, command, seeds, results)
    write(args.out, extra, command, seeds, results)
    print(json.dumps(io.read_json(args.out)["criterion"], indent=1))


# What a run of each kind reads (its stage's sections): an earlier run is reused when these are the same now.
READS = {"teacher": ("data", "target", "teacher", "runtime", "eval"),
         "student": ("data", "target", "distill", "runtime", "eval"),
         "cohort": ("data", "target", "cohort", "runtime", "eval")}


def reusable(params: Params, found: dict, wanted: dict) -> dict[str, dict]:
    """The runs of an earlier output (this file's, a parallel process's) that ran with the params the same run
    (row, seed) gets now, in the sections it reads: a change to the cohort's keys keeps the teacher's runs."""
    seeds = sorted({int(s) for by_seed in found.get("runs", {}).values() for s in by_seed})
    ran = {(row, seed): sets for row, _, seed, sets in plan(params, seeds, found.get("setting", {}))}
    keep: dict[str, dict] = {}
    for row, by_seed in found.get("runs", {}).items():
        for seed, result in by_seed.items():
            key = (row, int(seed))
            if key not in wanted or key not in ran:
                continue
            kind, sets = wanted[key]
            now, then = params.with_overrides(sets), params.with_overrides(ran[key])
            if all(getattr(now, section) == getattr(then, section) for section in READS[kind]):
                keep.setdefault(row, {})[seed] = result
    return keep


def write(out: Path, extra: dict, command: str, seeds: list[int], results: dict) -> None:
    rows = summarise(results)
    io.write_json(out, {"setting": extra, "command": command, "seeds": seeds, "runs": results, "rows": rows,
                        "criterion": verdict(rows), "steady_std": STEADY, "room_points": ROOM_POINTS,
                        "machine": runtime_note()})


def runtime_note() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


if __name__ == "__main__":
    main()
