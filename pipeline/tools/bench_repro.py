"""`make bench-repro`: the wall time of the default `make repro` from a fresh clone, stage by stage, written to
metrics/bench_repro.json. A command, not a stage: timings vary from run to run, and only a quiet machine gives
figures (the load average before and after each run is recorded beside it).

Each run clones this repository's HEAD into a temporary folder (no outputs, an empty DVC cache and run-cache,
so every stage computes) and times `make repro` there with this checkout's venv (`VENV=`, so no install is
timed). DVC's "Running stage 'x'" lines are stamped as they come: a stage's seconds run from its line to the
next one (the last to the end of make), so they include the stage's start-up and DVC's own bookkeeping.
The JSON gives each run and, over the runs, the median total and each stage's median."""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from pipeline import io, paths
from pipeline.stages.common import stage
from pipeline.tools.machine import machine

OUTPUT = paths.METRICS / "bench_repro.json"
# Anywhere in a line: a stage's progress bar ends in carriage returns, with no newline before DVC's next line
STAGE_LINE = re.compile(r"(?:^|\r)Running stage '([^']+)'")


def stage_seconds(stamped: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds of each stage from (time, line) pairs of make's output: from its 'Running stage' line to the
    next one, the last one to `end`."""
    starts = [(t, m.group(1)) for t, line in stamped if (m := STAGE_LINE.search(line))]
    bounds = [t for t, _ in starts[1:]] + [end]
    return {name: round(stop - start, 2) for (start, name), stop in zip(starts, bounds)}


def one_run(venv: Path, target: str, env: dict[str, str] | None = None,
            read: Callable[[Path], dict] | None = None) -> dict:
    """`make target` in a fresh clone of HEAD, with `env` added to the environment; `read(clone)`, if given,
    keeps what it returns (under "read") before the clone is deleted."""
    with tempfile.TemporaryDirectory(prefix="bench-repro-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", ".", str(clone)], check=True)
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(["make", target, f"VENV={venv}"], cwd=clone, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})
        stamped = []
        for line in proc.stdout:
            stamped.append((time.perf_counter() - start, line.rstrip("\n")))
        rc = proc.wait()
        total = time.perf_counter() - start
        kept = read(clone) if read and rc == 0 else None
    if rc:
        tail = "\n".join(line for _, line in stamped[-20:])
        raise RuntimeError(f"make {target} failed with exit {rc} in the fresh clone:\n{tail}")
    stages = stage_seconds(stamped, total)
    first = next((t for t, line in stamped if STAGE_LINE.search(line)), total)
    run = {"seconds": round(total, 1), "before_first_stage_s": round(first, 1), "stages": stages,
           "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    return run | ({"read": kept} if read else {})


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_repro", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh clones timed one after the other (default 3)")
    parser.add_argument("--target", default="repro", help="the make target timed (default: repro)")
    parser.add_argument("--out", default=str(OUTPUT))
    args = parser.parse_args(argv)
    venv = Path(os.environ.get("VENV", ".venv")).absolute()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    runs = []
    for i in range(args.runs):
        runs.append(one_run(venv, args.target))
        print(f"run {i + 1}/{args.runs}: {runs[-1]['seconds']:.0f} s (load {runs[-1]['load_before']} -> "
              f"{runs[-1]['load_after']})", flush=True)
    names = list(runs[0]["stages"])
    io.write_json(args.out, {
        "target": f"make {args.target}", "commit": commit, "runs": runs,
        "median_s": round(statistics.median(r["seconds"] for r in runs), 1),
        "stage_median_s": {n: round(statistics.median(r["stages"].get(n, 0.0) for r in runs), 2) for n in names},
        "machine": machine(),
        "command": "python -m pipeline.tools.bench_repro " + " ".join(argv)})
    print(f"make {args.target} from a fresh clone: median {statistics.median(r['seconds'] for r in runs):.0f} s "
          f"over {len(runs)} runs; wrote {args.out}")


if __name__ == "__main__":
    main()
