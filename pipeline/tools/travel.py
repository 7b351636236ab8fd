"""`python -m pipeline.tools.travel`: how far the default pipeline's metrics travel to another CPU. E0's
pretraining amplifies the float differences between CPU kernels, so the same params on another CPU give other
metrics; a reviewer running `dvc metrics diff` there must know how far apart is "the same".

With no second machine at hand, another CPU's kernels are approached on this one by capping them (`--kernels`):
torch's ATen dispatch, oneDNN and MKL held to a lower instruction set (machine.KERNEL_ENV). Each setting runs
`make repro` in a fresh clone of HEAD (bench_repro's run: no cache, every stage computes) and its metrics are
read against the committed order-I comparison (metrics/compare.json): the row whose params are the default's, its
spread over seeds that redraw data, E0 and batch order, as a 95 % prediction interval for one more run
(seed_stats.prediction). Writes metrics/travel.json; the docs render it (`travel.markdown`)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

import yaml

from pipeline import io, paths
from pipeline.errors import InputError
from pipeline.stages.common import stage
from pipeline.tools import compare_tables, seed_stats
from pipeline.tools.bench_repro import one_run
from pipeline.tools.machine import machine

OUTPUT = paths.METRICS / "travel.json"
COMPARISON = paths.METRICS / "compare.json"
METRICS = ("transfer", "average", "last")
# Named kernel caps. sse42: a CPU before AVX (ATen's scalar-dispatch kernels, oneDNN and MKL at SSE4.x);
# avx2: an AVX-512 machine held to AVX2 (the CPU of the second machine); native: nothing capped.
KERNELS = {
    "sse42": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "native": {},
}


def read_clone(env: dict[str, str]):
    """What a finished clone keeps: its default metrics, E0's zero-shot Transfer and the machine as its stages
    saw it (the capped kernels, read in a process with the same environment)."""
    def read(clone: Path) -> dict:
        cl = json.loads((clone / paths.CL).read_text())
        zero_shot = json.loads((clone / paths.METRICS / "zero_shot.json").read_text())
        seen = subprocess.run([str(Path(os.environ.get("VENV", ".venv")).absolute() / "bin" / "python"), "-c",
                               "import json; from pipeline.tools.machine import machine; print(json.dumps(machine()))"],
                              cwd=clone, env={**os.environ, **env}, check=True, capture_output=True, text=True)
        return {"metrics": {m: cl[m] for m in METRICS}, "e0_transfer": zero_shot.get("transfer"),
                "machine": json.loads(seen.stdout)}
    return read


def reference(summary: dict, params: dict) -> dict | None:
    """The committed comparison's row for the default params: its seed, and each metric's spread over seeds with
    the prediction interval. None when no row runs the default's params (a stale or older comparison)."""
    row = compare_tables.default_row(summary, params)
    if row is None:
        return None
    variant, seed = row
    entry = summary["variants"][variant]
    return {"variant": variant, "seed": seed, "seeds": entry["seeds"],
            "metrics": {m: seed_stats.prediction(entry[m]["values"]) for m in METRICS}}


def verdict(run: dict, ref: dict | None) -> dict | None:
    """Per metric, whether the run falls inside the reference's prediction interval."""
    if ref is None:
        return None
    return {m: ref["metrics"][m]["pi95"][0] <= run["metrics"][m] <= ref["metrics"][m]["pi95"][1] for m in METRICS}


def markdown(summary: dict) -> str:
    ref = summary["reference"]
    head = "| kernels | machine | Transfer | Average | Last | E0 Transfer |\n|---|---|---|---|---|---|\n"
    committed = summary["committed"]
    rows = [f"| committed (`make repro` here) | {summary['machine']['cpu_capability']} | "
            + " | ".join(f"{committed['metrics'][m]:.2f}" for m in METRICS) + f" | {committed['e0_transfer']:.2f} |"]
    if ref:
        cells = [f"{r['mean']:.2f} ± {r['std']:.2f} [{r['pi95'][0]:.2f}, {r['pi95'][1]:.2f}]"
                 for r in (ref["metrics"][m] for m in METRICS)]
        rows.append(f"| seed interval ({ref['variant']}, seeds {', '.join(map(str, ref['seeds']))}) | | "
                    + " | ".join(cells) + " | |")
    for name, run in summary["runs"].items():
        inside = run.get("within")
        cells = [f"{run['metrics'][m]:.2f}" + ("" if inside is None else (" (inside)" if inside[m] else " (outside)"))
                 for m in METRICS]
        capped = ", ".join(f"{k}={v}" for k, v in run["env"].items()) or "none"
        rows.append(f"| {name} ({capped}) | {run['machine']['cpu_capability']} | " + " | ".join(cells)
                    + f" | {run['e0_transfer']:.2f} |")
    note = ("Seed interval: the committed order-I comparison's row for the default params, mean ± std over seeds "
            "and the 95 % prediction interval of one more run." if ref else
            "No committed comparison row runs the default's params (metrics/compare.json is older): no interval.")
    return head + "\n".join(rows) + "\n\n" + note + "\n"


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.travel", description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", nargs="+", default=["sse42"], help=f"kernel caps to run ({', '.join(KERNELS)})")
    parser.add_argument("--out", default=str(OUTPUT))
    args = parser.parse_args(argv)
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown:
        raise InputError(f"--kernels: {unknown[0]!r} is not one of {', '.join(KERNELS)}")
    params = yaml.safe_load(paths.PARAMS.read_text())
    ref = reference(io.read_json(COMPARISON), params) if COMPARISON.is_file() else None
    committed = {"metrics": {m: io.read_json(paths.CL)[m] for m in METRICS},
                 "e0_transfer": io.read_json(paths.METRICS / "zero_shot.json").get("transfer")}
    venv = Path(os.environ.get("VENV", ".venv")).absolute()
    runs = {}
    for name in args.kernels:
        env = KERNELS[name]
        print(f"make repro in a fresh clone, kernels {name} ({env or 'as the CPU has them'}) ...", flush=True)
        run = one_run(venv, "repro", env, read_clone(env))
        runs[name] = {"env": env, **run.pop("read"), "seconds": run["seconds"]}
        runs[name]["within"] = verdict(runs[name], ref)
        print(f"  {name}: " + ", ".join(f"{m} {runs[name]['metrics'][m]:.2f}" for m in METRICS), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    summary = {"commit": commit, "command": "python -m pipeline.tools.travel " + " ".join(argv), "machine": machine(),
               "committed": committed, "reference": ref, "runs": runs}
    io.write_json(args.out, summary)
    print(markdown(summary))


if __name__ == "__main__":
    main()
