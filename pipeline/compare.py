"""`make compare`: run the pipeline for every variant x seed of params.yaml `compare` as DVC experiments and
tabulate Transfer / Average / Last (mean and sample std over seeds) in metrics/compare.json, a markdown
table in metrics/compare.md, and the README between its `compare` markers.

Each run is a `dvc exp run` in the workspace, so the upstream stages (data, E0, prototypes) are reused and
only the train stages and evaluate run per experiment (`--temp` copies would re-run everything: DVC does
not check `persist` outputs out into them). The committed params.yaml, dvc.lock and metrics/ are restored
afterwards (`git checkout` + `dvc checkout`), so they must have no uncommitted changes when it starts."""
from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline import io, paths
from pipeline.config import Params, ParamsError
from pipeline.stages.common import load_params, stage

KEYS = ("transfer", "average", "last")
README = Path("README.md")
MARKERS = ("<!-- compare:start -->", "<!-- compare:end -->")


def experiment_name(variant: str, seed: int) -> str:
    return f"cmp-{variant}-s{seed}"


def overrides(params: Params, variant: str, seed: int) -> dict[str, object]:
    return {**params.compare.variants[variant], "train.seed": seed}


def check_variants(params: Params) -> None:
    """Every variant must give valid params: fail before the first (long) run, naming the variant."""
    base = params.model_dump(mode="json")
    for variant in params.compare.variants:
        raw = copy.deepcopy(base)
        for key, value in overrides(params, variant, 0).items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ParamsError(f"compare.variants.{variant}: {key!r} is not a key of params.yaml")
                node = node[part]
            if leaf not in node:
                raise ParamsError(f"compare.variants.{variant}: {key!r} is not a key of params.yaml")
            node[leaf] = value
        Params.from_dict(raw, source=f"compare.variants.{variant}")


RESTORED = ("params.yaml", "dvc.lock", paths.METRICS.as_posix())


def check_clean() -> None:
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *RESTORED], check=True, capture_output=True, text=True).stdout
    if dirty.strip():
        raise ParamsError(f"uncommitted changes in {', '.join(RESTORED)} would be overwritten; commit or stash them first:\n{dirty}")


def restore() -> None:
    """Back to the committed params and results (the experiments stay in `dvc exp show`)."""
    subprocess.run(["git", "checkout", "--", *RESTORED], check=True)
    subprocess.run(["dvc", "checkout", "--quiet"], check=True)


def run_experiment(name: str, sets: dict[str, object]) -> dict:
    """One `dvc exp run` in the workspace; returns its metrics/cl.json."""
    # An earlier experiment of that name is removed first: `exp run --force` would also re-run every stage.
    subprocess.run(["dvc", "exp", "remove", name], capture_output=True)
    cmd = ["dvc", "exp", "run", "--name", name]
    for key, value in sets.items():
        cmd += ["--set-param", f"{key}={value}"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return io.read_json(paths.CL)


def aggregate(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    """Per variant: mean and sample std (ddof=1) over seeds of each summary metric, plus the raw values."""
    table = {}
    for variant, results in runs.items():
        entry = {"method": results[0]["method"], "seeds": seeds}
        for key in KEYS:
            values = np.array([r[key] for r in results], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            entry[key] = {"mean": round(float(values.mean()), 2), "std": round(std, 2), "values": values.tolist()}
        table[variant] = entry
    return table


def markdown(summary: dict) -> str:
    zs = summary["zero_shot"]
    lines = [
        "| variant | method | Transfer | Average | Last |",
        "|---|---|---|---|---|",
        f"| E0 zero-shot | - | {zs['transfer']:.2f} | - | - |",
    ]
    for variant, entry in summary["variants"].items():
        cells = [f"{entry[k]['mean']:.2f} ± {entry[k]['std']:.2f}" for k in KEYS]
        lines.append(f"| {variant} | {entry['method']} | " + " | ".join(cells) + " |")
    seeds = ", ".join(map(str, summary["seeds"]))
    lines.append("")
    lines.append(f"Mean ± sample std over seeds {seeds} (`train.seed`; E0 is the same for every run), accuracy in %.")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> None:
    if not readme.is_file():
        return
    text = readme.read_text()
    start, end = MARKERS
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        print(f"note: {readme} has no {start} ... {end} markers; table not inserted", file=sys.stderr)
        return
    io.write_text(readme, pattern.sub(lambda _: f"{start}\n{table}{end}", text))


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", help="subset of params.yaml compare.variants (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="override compare.seeds")
    args = parser.parse_args(argv)
    params = load_params()
    check_variants(params)
    variants = args.variants or list(params.compare.variants)
    unknown = [v for v in variants if v not in params.compare.variants]
    if unknown:
        raise ParamsError(f"--variants: {unknown[0]!r} is not in compare.variants ({', '.join(params.compare.variants)})")
    seeds = args.seeds if args.seeds else params.compare.seeds
    subprocess.run(["dvc", "repro"], check=True)  # the shared upstream stages must be up to date first
    check_clean()
    zero_shot = io.read_json(paths.ZERO_SHOT)
    runs: dict[str, list[dict]] = {}
    start = time.perf_counter()
    try:
        for variant in variants:
            runs[variant] = [run_experiment(experiment_name(variant, s), overrides(params, variant, s)) for s in seeds]
    finally:
        restore()
    summary = {"seeds": seeds, "zero_shot": {"transfer": zero_shot["transfer"]}, "variants": aggregate(runs, seeds)}
    io.write_json(paths.COMPARE, summary)
    table = markdown(summary)
    io.write_text(paths.COMPARE_TABLE, table)
    update_readme(table)
    print(table)
    print(f"{len(variants) * len(seeds)} experiments in {time.perf_counter() - start:.0f} s; see `dvc exp show`")


if __name__ == "__main__":
    main()
