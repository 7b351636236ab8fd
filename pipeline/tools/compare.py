"""`make compare` / `make compare-distill` / `make compare-token`: run the pipeline for every variant x seed of params.yaml `compare`
as queued DVC experiments and tabulate the results (mean and sample std over seeds) in a JSON file, a markdown
table, the figures, and every generated block of README.md and docs/ that names the JSON file
(pipeline/tools/docs.py).

Four comparisons share the runner:
- `cl` (default): `compare.variants`, each seed sets every key of `compare.seed_keys` (by default the data's,
  E0's pretraining's and the batch order's: a seed redraws the tasks' images, E0 and the batches); Transfer / Average / Last, training wall time
  per task and peak memory (metrics/cost/), and the average accuracy after each task (a figure, compare_tables).
- `ablation`: `compare.ablation_variants` (variants of the headline method, dual_teacher), as `cl`.
- `distill`: `compare.distill_variants` (the methods of the compression branch), seeds set `data.seed` (the
  target's images where it draws them), `teacher.seed` and `distill.seed`: each seed trains its own teacher;
  the student's accuracy, its gain over the same student alone, added parameters and step time.
- `token`: `compare.token_variants` (the token student's ablation), as `distill`.

Each variant x seed is one `dvc exp run --queue -S ...`; `dvc queue start --jobs N` runs them, each in its own
copy of the repository, and the results are read back from the experiments' commits (`dvc exp show --json`
names them). The workspace is never touched: the stages upstream of what a variant changes (data, E0, prototypes, the CNN teacher) are checked out
from DVC's cache in every copy, never re-run, which is why the workspace's pipeline must be up to date first
(`make repro`; `make compress` for the compression tables); the summary records which stages the experiments ran."""
from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shlex
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Iterable

import yaml

from pipeline.tools import compare_tables as tables, compression_tables
from pipeline import io, paths
from pipeline.params import LIBRARIES, Params, ParamsError
from pipeline.errors import InputError
from pipeline.tools.exp_queue import check_up_to_date, experiments, reader, run_queued, stages_run
from pipeline.tools.machine import machine
from pipeline.tools.selection import order_overrides
from pipeline.stages.common import load_params, stage
from pipeline.tools import compare_plots, docs


@dataclass(frozen=True)
class Branch:
    name: str
    variants_key: str  # attribute of params.compare holding the variants
    # The dotted keys each seed sets; None: every key of compare.seed_keys (the continual branches). The compression
    # branches' seeds redraw the target's images (data.seed: which N a class), the networks' initial weights and
    # their batches, the teacher's too, so a seed's spread is the whole run's, not the student's init alone.
    seed_key: tuple[str, ...] | None
    collect: Callable[[tables.Reader], dict]  # one run's results, from a reader of its metrics files
    summarise: Callable[[dict[str, list[dict]], list[int]], dict]
    markdown: Callable[[dict], str]
    outputs: tuple  # (json, markdown) paths
    may_run: tuple[str, ...]  # stage-name patterns a variant may re-run: everything upstream comes from the cache
    setting_key: str | None = None  # attribute of params.compare: overrides every variant starts from
    plots: tuple[tuple[Callable[[dict, Path], None], Path], ...] = ()  # figures drawn from the summary, and their paths
    targets: tuple[str, ...] = ()  # the stages each experiment reproduces (with their upstream); (): the whole DAG
    # The stages a seed reruns, by the section of each seed key (the rest of the upstream comes from the cache)
    redrawn: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def variants(self, params: Params) -> dict[str, dict]:
        return getattr(params.compare, self.variants_key)

    def setting(self, params: Params) -> dict:
        return getattr(params.compare, self.setting_key) if self.setting_key else {}

    def seed_keys(self, params: Params) -> tuple[str, ...]:
        return self.seed_key if self.seed_key else tuple(params.compare.seed_keys)

    def allowed_to_run(self, params: Params) -> tuple[str, ...]:
        """`may_run`, the stages of the sections the setting changes (run once, then restored by DVC), and the
        stages a seed redraws (data.seed: the tasks and E0's corpus; pretrain.seed: E0)."""
        sections = {key.split(".")[0] for key in self.setting(params)}
        redrawn = {key.split(".")[0] for key in self.seed_keys(params)}
        return tuple(dict.fromkeys(self.may_run + tuple(sorted(sections & {"target", "teacher"})) +
                                   tuple(sorted({stage for section in redrawn for stage in self.redrawn.get(section, ())}))))


DISTILL_SEEDS = ("data.seed", "teacher.seed", "distill.seed")
# data.seed redraws the tasks and E0's corpus, pretrain.seed E0 (and so the prototypes)
CONTINUAL_REDRAWN = MappingProxyType({"data": ("prepare", "pretrain", "prototypes"), "pretrain": ("pretrain", "prototypes")})
# data.seed redraws the target's images (and so the teacher trained on them), teacher.seed the teacher
COMPRESSION_REDRAWN = MappingProxyType({"data": ("target", "teacher"), "teacher": ("teacher",)})

BRANCHES = {
    # Experiments reproduce `evaluate` and what it needs only: data.seed also feeds the compression branch's
    # target (and so its teacher and students), which the continual tables never read.
    "cl": Branch("cl", "variants", None, tables.collect_cl, tables.summarise_cl, tables.markdown_cl,
                 (paths.COMPARE, paths.COMPARE_TABLE), ("train@*", "evaluate"),
                 plots=((tables.plot_curves, paths.COMPARE_PLOT), (compare_plots.cl_bars, compare_plots.BARS),
                        (compare_plots.matrix_heatmaps, compare_plots.MATRICES)), targets=("evaluate",),
                 redrawn=CONTINUAL_REDRAWN),
    # The headline method's ablation: variants of dual_teacher, the same runs and table as `cl`.
    "ablation": Branch("ablation", "ablation_variants", None, tables.collect_cl, tables.summarise_cl,
                       tables.markdown_cl, (paths.COMPARE_ABLATION, paths.COMPARE_ABLATION_TABLE), ("train@*", "evaluate"),
                       plots=((compare_plots.ablation_dots, compare_plots.ABLATION),), targets=("evaluate",),
                       redrawn=CONTINUAL_REDRAWN),
    "distill": Branch("distill", "distill_variants", DISTILL_SEEDS, compression_tables.collect_distill, compression_tables.summarise_distill,
                      compression_tables.markdown_distill, (paths.COMPARE_DISTILL, paths.COMPARE_DISTILL_TABLE),
                      ("distill", "student_alone"), setting_key="distill_setting",
                      plots=((compare_plots.gains, compare_plots.DISTILL_GAINS),), targets=("distill", "student_alone"),
                      redrawn=COMPRESSION_REDRAWN),
    "cohort": Branch("cohort", "cohort_variants", ("data.seed", "cohort.seed"), compression_tables.collect_cohort, compression_tables.summarise_cohort,
                     compression_tables.markdown_cohort, (paths.COMPARE_COHORT, paths.COMPARE_COHORT_TABLE), ("cohort",),
                     setting_key="cohort_setting", plots=((compression_tables.plot_cohort, paths.COMPARE_COHORT_PLOT),
                                                          (compare_plots.gains, compare_plots.COHORT_GAINS)),
                     targets=("cohort",), redrawn=COMPRESSION_REDRAWN),
    "token": Branch("token", "token_variants", DISTILL_SEEDS, compression_tables.collect_distill, compression_tables.summarise_token,
                    compression_tables.markdown_token, (paths.COMPARE_TOKEN, paths.COMPARE_TOKEN_TABLE), ("distill", "student_alone"),
                    targets=("distill", "student_alone"), redrawn=COMPRESSION_REDRAWN),
}


def experiment_name(branch: Branch, variant: str, seed: int, tag: str | None = None) -> str:
    variant = f"{variant}-{tag}" if tag else variant
    return f"cmp-{variant}-s{seed}" if branch.name == "cl" else f"cmp-{branch.name}-{variant}-s{seed}"


def overrides(params: Params, variant: str, seed: int, branch: Branch = BRANCHES["cl"],
              extra: dict[str, object] | None = None) -> dict[str, object]:
    """A run's dotted-key overrides: the branch's setting, the variant's own, `--set`'s (on every variant alike),
    the seed (on every one of the branch's seed keys)."""
    return {**branch.setting(params), **branch.variants(params)[variant], **(extra or {}),
            **{key: seed for key in branch.seed_keys(params)}}


TAG = re.compile(r"[A-Za-z0-9_.]+")


def parse_sets(sets: list[str], tag: str | None) -> dict[str, object]:
    """`--set KEY=VALUE ...` (values read as YAML, as `dvc exp run -S` does) for a sweep of a setting shared by
    every variant; `--tag` must name it, for the experiments and the output files."""
    extra = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key or "." not in key:
            raise ParamsError(f"--set: {item!r} must be a dotted key and a value, e.g. distill.feature.weight=3")
        extra[key] = yaml.safe_load(value)
    if extra and not tag:
        raise ParamsError("--set: name the sweep with --tag (it goes into the experiments' and output files' names)")
    if tag is not None and not TAG.fullmatch(tag):
        raise ParamsError(f"--tag: {tag!r} may hold only letters, digits, '_' and '.'")
    return extra


def set_arg(key: str, value: object) -> str:
    """`--set KEY=VALUE` as a shell reads it back into the same value (parse_sets' YAML: null, not None; a
    list in flow style, quoted when it holds spaces)."""
    text = "\n".join(line for line in yaml.safe_dump(value, default_flow_style=True, width=1 << 20).splitlines()
                     if line != "...")
    return f"--set {shlex.quote(f'{key}={text}')}"


def outputs(branch: Branch, tag: str | None) -> tuple[Path, Path]:
    """The branch's summary and table; a tagged sweep's beside them (metrics/compare_distill-TAG.json ...)."""
    if not tag:
        return branch.outputs
    return tuple(Path(p).with_name(f"{Path(p).stem}-{tag}{Path(p).suffix}") for p in branch.outputs)


def check_variants(params: Params, branch: Branch = BRANCHES["cl"], extra: dict[str, object] | None = None) -> None:
    """Every variant must give valid params: fail before the first (long) run, naming the variant."""
    for variant in branch.variants(params):
        params.with_overrides(overrides(params, variant, 0, branch, extra),
                              source=f"compare.{branch.variants_key}.{variant}" + (" with --set" if extra else ""))


def default_jobs(params: Params, runs: Iterable[dict[str, object]] = ()) -> int:
    """Experiments at once: compare.jobs, else as many as the cores hold at the threads the runs get (their
    `runtime.threads` override, e.g. a --set's, else params.yaml's: the largest of them)."""
    if params.compare.jobs is not None:
        return params.compare.jobs
    threads = max((int(r.get("runtime.threads", params.runtime.threads)) for r in runs), default=params.runtime.threads)
    return max(1, (os.cpu_count() or 1) // threads)


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--branch", choices=sorted(BRANCHES), default="cl", help="which comparison (default: cl)")
    parser.add_argument("--variants", nargs="*", help="subset of the branch's variants (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="override compare.seeds")
    parser.add_argument("--jobs", type=int, help="experiments at once (default: compare.jobs)")
    parser.add_argument("--redraw", action="store_true", help="only rewrite the table, figures and docs' blocks from the last output")
    parser.add_argument("--merge", action="store_true", help="keep the other variants of the last output (re-run a subset)")
    parser.add_argument("--collect", action="store_true",
                        help="queue nothing: the table from the experiments of these names already run (e.g. the "
                             "ones that succeeded when the queue stopped on a failed one)")
    parser.add_argument("--rev", action="append", metavar="COMMIT",
                        help="with --collect: the experiments of these baseline commits (repeatable) instead of "
                             "HEAD's, e.g. a sweep queued before later commits")
    parser.add_argument("--resume", action="store_true",
                        help="queue only the experiments this commit has not run yet (after a stopped queue)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for every variant alike (a sweep; repeatable; needs --tag)")
    parser.add_argument("--order", help="cl, ablation: train in this order of compare.orders (e.g. the held-out "
                                        "compare.held_out_order); tags the run with its name unless --tag does")
    parser.add_argument("--tag", help="names a --set sweep: experiments cmp-BRANCH-VARIANT-TAG-sSEED, outputs "
                                      "metrics/compare_BRANCH-TAG.{json,md} (the docs' blocks that name that file are rewritten)")
    args = parser.parse_args(argv)
    if args.rev and not args.collect:
        raise ParamsError("--rev: only with --collect (experiments are queued on HEAD)")
    if args.resume and args.collect:
        raise ParamsError("--resume: queues the missing runs; --collect queues none")
    branch = BRANCHES[args.branch]
    if args.order and branch.seed_key:  # the continual branches only (their seed keys are compare.seed_keys)
        raise ParamsError(f"--order: the {branch.name} comparison has no task order")
    args.tag = args.tag or args.order
    extra = parse_sets(args.set, args.tag)
    if args.order:
        extra |= order_overrides(load_params(*LIBRARIES), args.order)
    summary_path = outputs(branch, args.tag)[0]
    if args.redraw:
        return publish(branch, io.read_json(summary_path), args.tag)
    params = load_params(*LIBRARIES)
    check_variants(params, branch, extra)
    known = branch.variants(params)
    variants = args.variants or list(known)
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise ParamsError(f"--variants: {unknown[0]!r} is not in compare.{branch.variants_key} ({', '.join(known)})")
    if args.jobs is not None and args.jobs < 1:
        raise ParamsError(f"--jobs: {args.jobs} must be at least 1")
    seeds = args.seeds if args.seeds else params.compare.seeds
    names = {(v, s): experiment_name(branch, v, s, args.tag) for v in variants for s in seeds}
    start, kept = time.perf_counter(), 0
    if not args.collect:
        check_up_to_date(branch.targets)
        queued = {names[v, s]: overrides(params, v, s, branch, extra) for v, s in names}
        kept = run_queued(queued, args.jobs or default_jobs(params, queued.values()), branch.targets,
                          resume=args.resume)
    # a collected run's time is unknown here, and a resumed one's covers only the runs it queued
    seconds = None if args.collect or kept else round(time.perf_counter() - start)
    reference = branch.collect(io.read_json)  # the committed default run (E0 zero-shot, the teacher, ...)
    results = experiments(args.rev)
    missing = [n for n in names.values() if n not in results]
    if missing:
        where = f"commits {', '.join(args.rev)}" if args.rev else "this commit"
        raise InputError(f"no experiment {missing[0]} of {where} (`dvc exp show`); run it, or leave its variant "
                         f"out (a sweep queued before later commits: --collect --rev <its commit>)")
    runs = {v: [branch.collect(reader(names[v, s], results[names[v, s]])) for s in seeds] for v in variants}
    ran = sorted({s for name in names.values() for s in stages_run(name)})
    upstream = [s for s in ran if not any(fnmatch.fnmatchcase(s, p) for p in branch.allowed_to_run(params))]
    if upstream:  # results stand, but the runs cost more than they should: say so
        print(f"warning: queued experiments re-ran upstream stages {', '.join(upstream)}")
    command = "make compare" if branch.name == "cl" else f"make compare-{branch.name}"
    if args.tag:
        command = " ".join(["python -m pipeline.tools.compare --branch", branch.name, "--variants", *variants,
                            *(set_arg(k, v) for k, v in extra.items() if not k.startswith("tasks.")),
                            *(["--order", args.order] if args.order else []), "--tag", args.tag])
    summary = branch.summarise(runs, seeds) | {"reference": reference, "seconds": seconds, "command": command,
                                               "order": args.order,
                                               "stages_run": ran, "setting": {**branch.setting(params), **extra},
                                               "seed_keys": list(branch.seed_keys(params)),
                                               "variant_overrides": {v: branch.variants(params)[v] for v in variants},
                                               "commit": ", ".join(commits_of(args.rev)), "machine": machine()}
    if args.tag:
        summary["tag"] = args.tag
    if not branch.seed_key:  # a continual table: its per-task times are of this many steps a task
        summary["train_steps"] = extra.get("train.steps", params.train.steps)
    if args.merge and summary_path.is_file():
        summary = merge_summaries(io.read_json(summary_path), summary, variants)
    if branch.name == "cl":
        summary["checks"] = tables.regime_checks(summary)
    if branch.name == "token" and paths.THROUGHPUT.is_file():  # from `make bench` on the committed models
        summary["throughput"] = io.read_json(paths.THROUGHPUT)
    io.write_json(summary_path, summary)
    publish(branch, summary, args.tag)
    print(f"{len(names)} experiments" + (f" in {seconds} s" if seconds is not None else " collected") + "; see `dvc exp show`")


def merge_summaries(previous: dict, summary: dict, variants: list[str]) -> dict:
    """`--merge`: the last output's rows (variants, and the students alone of the distill table) with this run's
    replacing those of the same name; the time is the sum (unknown if either is)."""
    merged = dict(summary)
    for key in ("variants", "alone", "variant_overrides"):
        if key in previous:
            merged[key] = {**previous[key], **summary.get(key, {})}
    if "variant_overrides" not in previous:  # the earlier rows' overrides are unknown: record none rather than some
        merged.pop("variant_overrides", None)
    commits = [previous.get("commit") or "earlier rows' not recorded", summary.get("commit")]
    merged["commit"] = ", ".join(dict.fromkeys(c for c in commits if c))
    merged["seconds"] = None if None in (summary["seconds"], previous["seconds"]) else summary["seconds"] + previous["seconds"]
    merged["merged"] = sorted(set(previous.get("merged", [])) | set(variants))  # rows of a later run
    return merged


def commits_of(revs: list[str] | None) -> list[str]:
    """The commits the experiments were queued on: the --rev baselines, else HEAD (short hashes)."""
    return [subprocess.run(["git", "rev-parse", "--short", rev], check=True, capture_output=True, text=True).stdout.strip()
            for rev in revs or ["HEAD"]]


def publish(branch: Branch, summary: dict, tag: str | None = None) -> None:
    """The markdown table, the figures (untagged outputs) and every block of README.md / docs/ that names the
    summary's file, all from the summary alone."""
    table = branch.markdown(summary)
    io.write_text(outputs(branch, tag)[1], table)
    print(table)
    for doc in docs.update(Path("."), only=Path(outputs(branch, tag)[0]).as_posix()):
        print(f"rewrote the blocks of {doc}")
    if tag:
        return
    for draw, path in branch.plots:
        draw(summary, path)


if __name__ == "__main__":
    main()
