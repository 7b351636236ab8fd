"""`make bench-dvc`: what a stage costs before it computes, and what a return to params already run costs,
written to metrics/bench_dvc.json. A command, not a stage: timings vary from run to run.

- Start-up: for every stage, a fresh `python` that imports the stage's module and loads params.yaml the way
  the stage does (with the libraries whose names it checks: found in its `load_params(...)` call), i.e. the
  process up to its first computation; against a `python` that only imports torch. Median of `--repeats`.
- Return to seen params: in a temporary clone of this repository that shares its DVC cache, `dvc exp run -S
  loss.dis_weight=<other>` and then back to the committed value; the second is timed. DVC restores the
  train stages and evaluate from its run-cache instead of training again (the log's stage lines are kept).
Needs `make repro` first (the clone checks the committed outputs out of the cache)."""
from __future__ import annotations

import argparse
import ast
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import io, paths
from pipeline.params import Params
from pipeline.stages.common import stage

STAGES = Path("pipeline/stages")
OUTPUT = paths.METRICS / "bench_dvc.json"


def stage_libraries(module: Path) -> tuple[str, ...]:
    """The library names a stage passes to load_params (read from its source, so the bench cannot drift)."""
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params":
            return tuple(a.value for a in node.args if isinstance(a, ast.Constant))
    raise ValueError(f"{module}: no load_params(...) call")


def process_seconds(code: str, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - start)
    return times


def startup(repeats: int) -> dict:
    torch_only = process_seconds("import torch", repeats)
    out = {"torch_import_s": round(statistics.median(torch_only), 3), "stages": {}}
    for module in sorted(STAGES.glob("*.py")):
        if module.stem in ("__init__", "common"):
            continue
        libraries = stage_libraries(module)
        code = (f"import pipeline.stages.{module.stem}; from pipeline.stages.common import load_params; "
                f"load_params(*{libraries!r})")
        median = statistics.median(process_seconds(code, repeats))
        out["stages"][module.stem] = {"libraries": list(libraries), "seconds": round(median, 3),
                                      "beyond_torch_s": round(median - out["torch_import_s"], 3)}
    out["max_beyond_torch_s"] = max(s["beyond_torch_s"] for s in out["stages"].values())
    return out


def return_to_seen_params(key: str, other: str) -> dict:
    value = _param(key)
    with tempfile.TemporaryDirectory(prefix="bench-dvc-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", ".", str(clone)], check=True)
        cache = subprocess.run(["dvc", "cache", "dir"], check=True, capture_output=True, text=True).stdout.strip()
        run = lambda *a: subprocess.run(list(a), cwd=clone, check=True, capture_output=True, text=True)  # noqa: E731
        run("dvc", "config", "--local", "cache.dir", cache)
        run("dvc", "checkout", "--quiet")
        run("dvc", "exp", "run", "-S", f"{key}={other}")
        start = time.perf_counter()
        proc = run("dvc", "exp", "run", "-S", f"{key}={value}")
        seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    return {"key": key, "from": other, "to": value, "seconds": round(seconds, 2),
            "restored": re.findall(r"Stage '([^']+)' is cached - skipping run", log),
            "ran": re.findall(r"^Running stage '([^']+)'", log, re.MULTILINE)}


def _param(key: str) -> str:
    """The committed value of a dotted key, read as the stages read params.yaml."""
    node = Params.load(libraries=()).model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    return str(node)


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_dvc", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="processes per stage for the start-up median")
    parser.add_argument("--key", default="loss.dis_weight", help="the param of the return (default: loss.dis_weight)")
    parser.add_argument("--other", default="0.0", help="the value it leaves for first (default: 0.0)")
    args = parser.parse_args(argv)
    results = {"startup": startup(args.repeats), "return_to_seen_params": return_to_seen_params(args.key, args.other),
               "setup": {"repeats": args.repeats, "machine": platform.machine(), "cpus": os.cpu_count(),
                         "python": platform.python_version()}}
    io.write_json(OUTPUT, results)
    s, r = results["startup"], results["return_to_seen_params"]
    print(f"stage start-up: at most {s['max_beyond_torch_s']:.2f} s beyond importing torch ({s['torch_import_s']:.2f} s) | "
          f"return to {r['key']}={r['to']}: {r['seconds']:.1f} s, {len(r['restored'])} stages restored, "
          f"{len(r['ran'])} run")


if __name__ == "__main__":
    main()
