"""`make compare` / `make compare-distill`: run the pipeline for every variant x seed of params.yaml `compare`
as DVC experiments and tabulate the results (mean and sample std over seeds) in a JSON file, a markdown table
and the README between its markers.

Two branches share the runner:
- `cl` (default): `compare.variants`, seeds set `train.seed`; Transfer / Average / Last, training wall time
  per task and peak memory (metrics/cost/), and the average accuracy after each task (a figure, compare_tables).
- `ablation`: `compare.ablation_variants` (variants of the headline method, dual_teacher), as `cl`.
- `distill`: `compare.distill_variants`, seeds set `distill.seed`; student accuracy with and without
  distillation (metrics/distill.json).

Each run is a `dvc exp run` in the workspace, so the upstream stages (data, E0, prototypes, the CNN teacher)
are reused and only the stages a variant changes run (`--temp` copies would re-run everything: DVC does not
check `persist` outputs out into them). The committed params.yaml, dvc.lock and metrics/ are restored
afterwards (`git checkout` + `dvc checkout`), so they must have no uncommitted changes when it starts."""
from __future__ import annotations

import argparse
import copy
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

from pipeline import compare_tables as tables
from pipeline import io, paths
from pipeline.config import LIBRARIES, Params, ParamsError
from pipeline.stages.common import load_params, stage


@dataclass(frozen=True)
class Branch:
    name: str
    variants_key: str  # attribute of params.compare holding the variants
    seed_key: str  # the dotted key each seed sets
    collect: Callable[[], dict]  # one run's results, read from the workspace after `dvc exp run`
    summarise: Callable[[dict[str, list[dict]], list[int]], dict]
    markdown: Callable[[dict], str]
    outputs: tuple  # (json, markdown) paths
    markers: tuple[str, str]  # README markers around the table

    def variants(self, params: Params) -> dict[str, dict]:
        return getattr(params.compare, self.variants_key)


BRANCHES = {
    "cl": Branch("cl", "variants", "train.seed", tables.collect_cl, tables.summarise_cl, tables.markdown_cl,
                 (paths.COMPARE, paths.COMPARE_TABLE), ("<!-- compare:start -->", "<!-- compare:end -->")),
    # The headline method's ablation: variants of dual_teacher, the same runs and table as `cl`.
    "ablation": Branch("ablation", "ablation_variants", "train.seed", tables.collect_cl, tables.summarise_cl,
                       tables.markdown_cl, (paths.COMPARE_ABLATION, paths.COMPARE_ABLATION_TABLE),
                       ("<!-- compare-ablation:start -->", "<!-- compare-ablation:end -->")),
    "distill": Branch("distill", "distill_variants", "distill.seed", tables.collect_distill, tables.summarise_distill,
                      tables.markdown_distill, (paths.COMPARE_DISTILL, paths.COMPARE_DISTILL_TABLE),
                      ("<!-- compare-distill:start -->", "<!-- compare-distill:end -->")),
}


def experiment_name(branch: Branch, variant: str, seed: int) -> str:
    return f"cmp-{variant}-s{seed}" if branch.name == "cl" else f"cmp-{branch.name}-{variant}-s{seed}"


def overrides(params: Params, variant: str, seed: int, branch: Branch = BRANCHES["cl"]) -> dict[str, object]:
    return {**branch.variants(params)[variant], branch.seed_key: seed}


def check_variants(params: Params, branch: Branch = BRANCHES["cl"]) -> None:
    """Every variant must give valid params: fail before the first (long) run, naming the variant."""
    base = params.model_dump(mode="json")
    where = f"compare.{branch.variants_key}"
    for variant in branch.variants(params):
        raw = copy.deepcopy(base)
        for key, value in overrides(params, variant, 0, branch).items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ParamsError(f"{where}.{variant}: {key!r} is not a key of params.yaml")
                node = node[part]
            if leaf not in node:
                raise ParamsError(f"{where}.{variant}: {key!r} is not a key of params.yaml")
            node[leaf] = value
        Params.from_dict(raw, source=f"{where}.{variant}")


RESTORED = ("params.yaml", "dvc.lock", paths.METRICS.as_posix())


def check_clean() -> None:
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *RESTORED], check=True, capture_output=True, text=True).stdout
    if dirty.strip():
        raise ParamsError(f"uncommitted changes in {', '.join(RESTORED)} would be overwritten; commit or stash them first:\n{dirty}")


def restore() -> None:
    """Back to the committed params and results (the experiments stay in `dvc exp show`)."""
    subprocess.run(["git", "checkout", "--", *RESTORED], check=True)
    subprocess.run(["dvc", "checkout", "--quiet"], check=True)
    # Files only an experiment wrote (a method's own loss curve): check_clean saw no untracked ones before.
    subprocess.run(["git", "clean", "-fdq", "--", paths.METRICS.as_posix()], check=True)


def run_experiment(name: str, sets: dict[str, object], collect: Callable[[], dict]) -> dict:
    """One `dvc exp run` in the workspace; returns what `collect` reads of its results."""
    # An earlier experiment of that name is removed first: `exp run --force` would also re-run every stage.
    subprocess.run(["dvc", "exp", "remove", name], capture_output=True)
    # `exp run` leaves the previous experiment's params in the workspace: start every run from the committed
    # params.yaml, or a key set by one variant (distill.mode=hard) leaks into the next.
    subprocess.run(["git", "checkout", "--", "params.yaml"], check=True)
    cmd = ["dvc", "exp", "run", "--name", name]
    for key, value in sets.items():
        cmd += ["--set-param", f"{key}={'null' if value is None else value}"]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return collect()


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--branch", choices=sorted(BRANCHES), default="cl", help="which comparison (default: cl)")
    parser.add_argument("--variants", nargs="*", help="subset of the branch's variants (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="override compare.seeds")
    parser.add_argument("--redraw", action="store_true", help="only rewrite the table, figure and README from the last output")
    parser.add_argument("--merge", action="store_true", help="keep the other variants of the last output (re-run a subset)")
    args = parser.parse_args(argv)
    branch = BRANCHES[args.branch]
    if args.redraw:
        return publish(branch, io.read_json(branch.outputs[0]))
    params = load_params(*LIBRARIES)
    check_variants(params, branch)
    known = branch.variants(params)
    variants = args.variants or list(known)
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ParamsError(f"--variants: {unknown[0]!r} is not in compare.{branch.variants_key} ({', '.join(known)})")
    seeds = args.seeds if args.seeds else params.compare.seeds
    subprocess.run(["dvc", "repro"], check=True)  # the shared upstream stages must be up to date first
    check_clean()
    reference = branch.collect()  # the committed default run (E0 zero-shot, the teacher, ...)
    runs: dict[str, list[dict]] = {}
    start = time.perf_counter()
    try:
        for variant in variants:
            runs[variant] = [
                run_experiment(experiment_name(branch, variant, s), overrides(params, variant, s, branch), branch.collect)
                for s in seeds
            ]
    finally:
        restore()
    command = "make compare" if branch.name == "cl" else f"make compare-{branch.name}"
    summary = branch.summarise(runs, seeds) | {"reference": reference, "seconds": round(time.perf_counter() - start),
                                               "command": command}
    if args.merge and branch.outputs[0].is_file():
        previous = io.read_json(branch.outputs[0])
        summary["variants"] = {**previous["variants"], **summary["variants"]}
        summary["seconds"] += previous["seconds"]
        summary["merged"] = sorted(set(previous.get("merged", [])) | set(variants))  # rows of a later run
    if branch.name == "cl":
        summary["checks"] = tables.regime_checks(summary)
    if branch.name == "distill" and paths.THROUGHPUT.is_file():  # from `make bench` on the committed models
        summary["throughput"] = io.read_json(paths.THROUGHPUT)
    io.write_json(branch.outputs[0], summary)
    publish(branch, summary)
    print(f"{len(variants) * len(seeds)} experiments in {summary['seconds']} s; see `dvc exp show`")


def publish(branch: Branch, summary: dict) -> None:
    """The markdown table, the README section and (cl) the figure, all from the summary alone."""
    table = branch.markdown(summary)
    io.write_text(branch.outputs[1], table)
    tables.update_readme(table, branch.markers)
    if branch.name == "cl":
        tables.plot_curves(summary, paths.COMPARE_PLOT)
    print(table)


if __name__ == "__main__":
    main()
