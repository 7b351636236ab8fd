"""`python -m pipeline.tools.search`: the selection protocol's search. Every method of `compare.search` gets its grid
(each combination of the values given), each point x each seed one queued DVC experiment (`dvc exp run
--queue`, as `pipeline.compare` runs them) under `compare.search_setting` (a validation split carved from the
training images) in `compare.selection_order`. The choice (pipeline/selection.py) reads back each run's own
params.yaml and metrics/cl.json and refuses any run evaluated on the test split or in the held-out order; it
writes metrics/selection.{json,md}, and `--apply` writes the chosen values into params.yaml's
compare.variants (comments kept), from where `python -m pipeline.tools.compare --order <held-out>` reports them.

Protocol: docs/notes/2026-12-06-selection-protocol.md."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from pipeline import io, paths
from pipeline.tools import compare, exp_queue
from pipeline.tools import selection as sel
from pipeline.params import LIBRARIES, Params, ParamsError
from pipeline.tools import params_edit as editing
from pipeline.tools.machine import machine
from pipeline.errors import InputError
from pipeline.stages.common import load_params, stage

SELECTION = paths.METRICS / "selection.json"
SELECTION_TABLE = paths.METRICS / "selection.md"


def points(params: Params, variant: str, earlier: dict | None = None) -> list[dict]:
    """The variant's grid and, given its earlier entry, compare.refine's ideas at the earlier choice (grid first:
    a tie keeps the grid's point)."""
    ideas, grid = params.compare.refine.get(variant, {}), sel.grid(params.compare.search[variant])
    if not earlier:
        return grid
    chosen = next((p for p in grid if p == earlier["chosen"]), earlier["chosen"])  # in grid order (JSON sorts keys)
    return grid + sel.refinements(chosen, ideas)


def search_runs(params: Params, variants: list[str], seeds: list[int],
                earlier: dict[str, dict] | None = None) -> dict[str, tuple[str, dict, int, dict]]:
    """Experiment name -> (variant, grid point, seed, overrides) of every search run, each checked to give valid
    params (one line naming the variant and point, before anything is queued). `earlier`: variant -> its entry
    in metrics/selection.json, whose choice compare.refine's ideas are tried at (--extend)."""
    c = params.compare
    stray = [v for v in c.refine if v not in c.search]
    if stray:
        raise ParamsError(f"compare.refine.{stray[0]}: not in compare.search (an idea is tried at a grid's choice)")
    if not c.selection_order:
        raise ParamsError("compare.selection_order: name the order hyperparameters are chosen on")
    if c.selection_order == c.held_out_order:
        raise ParamsError(f"compare.selection_order: {c.selection_order!r} is the held-out order too")
    if not c.search_setting.get("data.val_per_class"):
        raise ParamsError("compare.search_setting: must set data.val_per_class > 0 (selection reads validation metrics only)")
    order = sel.order_overrides(params, c.selection_order, "compare.selection_order")
    if c.held_out_order:
        sel.order_overrides(params, c.held_out_order, "compare.held_out_order")
    runs = {}
    for variant in variants:
        for point in points(params, variant, (earlier or {}).get(variant)):
            for seed in seeds:
                sets = {**compare.overrides(params, variant, seed), **c.search_setting, **order, **point}
                name = f"sel-{variant}-{sel.point_name(point)}-s{seed}"
                params.with_overrides(sets, source=f"compare.search.{variant} at {sel.point_name(point)}")
                runs[name] = (variant, point, seed, sets)
    return runs


def read_run(name: str, rev: str, variant: str, point: dict, seed: int) -> sel.Run:
    """A search run read back from its experiment commit: its params.yaml and its metrics/cl.json, no more."""
    read = exp_queue.reader(name, rev)
    return sel.Run(name=name, variant=variant, point=point, seed=seed,
                   params=yaml.safe_load(exp_queue.git_text(rev, paths.PARAMS, name)), metrics=read(paths.CL))


def apply(selection: dict, path: Path = paths.PARAMS) -> dict:
    """Write each variant's chosen values into params.yaml's compare.variants.<variant> (the variant's line alone
    changes). Returns key -> (old, new) of what changed."""
    variants = yaml.safe_load(Path(path).read_text())["compare"]["variants"]
    return editing.edit(path, {f"compare.variants.{v}": {**variants[v], **e["chosen"]}
                               for v, e in selection["variants"].items()})


def default_variant(doc: dict) -> str | None:
    """The comparison variant the default pipeline runs: the one whose every override is params.yaml's own value,
    the keys its search sets aside (--apply may have written chosen values there that the default has not yet)."""
    for name, sets in doc["compare"]["variants"].items():
        searched = set(doc["compare"]["search"].get(name, {}))
        if all(editing.get(doc, key) == value for key, value in sets.items() if key not in searched):
            return name
    return None


def set_default(selection: dict, variant: str, path: Path = paths.PARAMS) -> dict:
    """`--default`: the default variant's chosen values into params.yaml's own keys, so `make repro` runs what the
    search chose (and the committed comparison's seed-0 row is the default pipeline). key -> (old, new)."""
    return editing.edit(path, selection["variants"][variant]["chosen"])


def protocol(params: Params) -> dict:
    """What a selection is chosen by: variants chosen by the same protocol may gather in one file (selection.merge)."""
    return {"metric": params.compare.search_metric, "split": "validation", "order": params.compare.selection_order,
            "setting": params.compare.search_setting}


def earlier_selection(params: Params) -> dict | None:
    """metrics/selection.json when it was chosen by this protocol (its variants are kept beside a new search's)."""
    if not SELECTION.exists():
        return None
    earlier = io.read_json(SELECTION)
    return earlier if sel.same_protocol(earlier, protocol(params)) else None


def extension(params: Params, variants: list[str], seeds: list[int], earlier: dict | None) -> dict[str, list[str]]:
    """--extend: per variant, the points of its earlier entry (same protocol, same seeds) not run again."""
    held = (earlier or {}).get("variants", {})
    missing = [v for v in variants if v not in held]
    if missing:
        raise ParamsError(f"--extend: {SELECTION} holds no {missing[0]} chosen by this protocol: search its whole grid")
    return {v: sel.kept_points(held[v], point_names(params, v, held[v]), seeds) for v in variants}


def point_names(params: Params, variant: str, earlier: dict | None) -> list[str]:
    return [sel.point_name(p) for p in points(params, variant, earlier)]


def search(params: Params, args: argparse.Namespace, variants: list[str], command: str,
           earlier: dict | None = None) -> dict:
    """Queue (unless --collect) and read back the runs of `variants`; their choice, each entry with its provenance.
    --extend: only the points the earlier entries do not hold (and their choice again), chosen over them all."""
    seeds = args.seeds or params.compare.seeds
    held = earlier["variants"] if args.extend and earlier else {}
    kept = extension(params, variants, seeds, earlier) if args.extend else {}
    runs = search_runs(params, variants, seeds, held)
    runs = {n: r for n, r in runs.items() if sel.point_name(r[1]) not in kept.get(r[0], ())}
    start, resumed = time.perf_counter(), 0
    if not args.collect:
        exp_queue.check_up_to_date(("evaluate",))
        queued = {n: r[3] for n, r in runs.items()}
        resumed = exp_queue.run_queued(queued, args.jobs or compare.default_jobs(params, queued.values()),
                                       ("evaluate",), resume=args.resume)
    found = exp_queue.experiments(args.rev)
    missing = [n for n in runs if n not in found]
    if missing:
        raise InputError(f"no experiment {missing[0]} (`dvc exp show`): run the search, or --collect --rev <its commit>")
    held_out = params.compare.orders.get(params.compare.held_out_order or "")
    chosen = sel.choose([read_run(n, found[n], *r[:3]) for n, r in runs.items()], params.compare.search_metric, held_out)
    for variant in kept:
        chosen["variants"][variant] = sel.extend(held[variant], chosen["variants"][variant],
                                                 point_names(params, variant, held[variant]), variant)
    chosen |= protocol(params)
    # each variant's provenance: a selection may gather variants searched one at a time on different commits
    seconds = None if args.collect or resumed else round(time.perf_counter() - start)
    # experiments are local to the repository (unless `dvc exp pull`ed): collected here, they ran here
    made = {"command": command, "baseline": ", ".join(compare.commits_of(args.rev)), "seconds": seconds,
            "machine": machine()}
    for entry in chosen["variants"].values():
        entry |= made
    return chosen


@stage
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.search", description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", help="subset of compare.search (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, help="override compare.seeds")
    parser.add_argument("--jobs", type=int, help="experiments at once (default: compare.jobs)")
    parser.add_argument("--collect", action="store_true", help="queue nothing: choose from the runs already made")
    parser.add_argument("--rev", action="append", metavar="COMMIT", help="with --collect: the runs of these baseline commits")
    parser.add_argument("--resume", action="store_true", help="queue only the runs this commit has not made yet")
    parser.add_argument("--extend", action="store_true",
                        help=f"a grid grown outward, or compare.refine's ideas at the earlier choice: run only the points "
                             f"{SELECTION} does not hold for the variant (and its earlier choice again, which must "
                             "give the same value), choose over them all")
    parser.add_argument("--from-file", action="store_true",
                        help=f"queue and read no run: --apply / --default write the choices {SELECTION} holds")
    parser.add_argument("--apply", action="store_true", help="write the chosen values into params.yaml's compare.variants")
    parser.add_argument("--default", action="store_true",
                        help="also write the default's variant's chosen values into params.yaml's own keys (then make repro)")
    args = parser.parse_args(argv)
    params = load_params(*LIBRARIES)
    known = params.compare.search
    variants = args.variants or list(known)
    unknown = [v for v in variants if v not in known or v not in params.compare.variants]
    if unknown:
        raise ParamsError(f"--variants: {unknown[0]!r} is not in both compare.search and compare.variants")
    if args.jobs is not None and args.jobs < 1:
        raise ParamsError(f"--jobs: {args.jobs} must be at least 1")
    if args.resume and args.collect:
        raise ParamsError("--resume: queues the missing runs; --collect queues none")
    if args.extend and args.from_file:
        raise ParamsError("--extend: runs the new points; --from-file runs none")
    earlier = earlier_selection(params)
    if args.from_file and earlier is None:
        raise InputError(f"--from-file: {SELECTION} " + ("does not exist: run the search" if not SELECTION.exists()
                                                          else "was chosen by another protocol (compare.search_*)"))
    default = default_variant(yaml.safe_load(paths.PARAMS.read_text()))
    chosen_before = set(earlier["variants"]) if earlier else set()
    if args.default and default not in (chosen_before if args.from_file else chosen_before | set(variants)):
        # before any run: the hours of a search are not lost to it
        raise ParamsError("--default: " + ("no compare.variants entry runs the default params (each override equal "
                                           "to params.yaml's value)" if default is None else
                                           f"the default's variant {default!r} is not searched (--variants)"))
    if args.from_file:
        chosen = earlier
    else:
        chosen = sel.merge(earlier, search(params, args, variants, "python -m pipeline.tools.search " + " ".join(argv),
                                           earlier), list(known))
        io.write_json(SELECTION, chosen)
        io.write_text(SELECTION_TABLE, sel.markdown(chosen))
        print(sel.markdown(chosen))
    if args.apply:
        apply(chosen)
        print(f"chosen values written to {paths.PARAMS} (compare.variants)")
    if args.default:
        changed = set_default(chosen, default)
        print(f"the default ({default}) now runs the chosen values: "
              + (", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items()) or "no value changed")
              + ("; run `make repro`" if changed else ""))


if __name__ == "__main__":
    main()
