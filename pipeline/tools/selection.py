"""The selection protocol's rules (docs/notes/2026-12-06-selection-protocol.md): task orders as overrides, each
method's search grid, and the choice of its values from validation metrics only.

A search run is valid for selection only if its own params (the params.yaml of its experiment commit) say that
its metrics are validation metrics: `data.val_per_class` > 0, so the tasks' evaluation split was carved from the
training images and the test images were never written (pipeline/data/validation.py), and its task order is not
the held-out order. `choose` refuses anything else: the choice can never rest on a test accuracy.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pipeline.params import E0, Params, ParamsError
from pipeline.errors import InputError

METRICS = ("transfer", "average", "last")


def order_overrides(params: Params, order: str, key: str = "--order") -> dict[str, str]:
    """The dotted-key overrides that chain the tasks in `compare.orders[order]` (each task's `prev`)."""
    orders = params.compare.orders
    if order not in orders:
        raise ParamsError(f"{key}: {order!r} is not in compare.orders ({', '.join(orders) or 'none'})")
    names = orders[order]
    if sorted(names) != sorted(params.tasks) or len(set(names)) != len(names):
        raise ParamsError(f"compare.orders.{order}: {names} must list every task of `tasks` once ({', '.join(params.tasks)})")
    return {f"tasks.{name}.prev": prev for name, prev in zip(names, [E0, *names[:-1]])}


def grid(space: dict[str, list]) -> list[dict[str, object]]:
    """Every combination of the values of `space` (key -> values), in the order the keys and values are given;
    one empty point for an empty space (the method's defaults)."""
    keys = list(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def refinements(chosen: dict[str, object], ideas: dict[str, list]) -> list[dict[str, object]]:
    """Each idea (key -> values) tried alone at a grid's choice: one point per value other than the choice's own."""
    return [{**chosen, key: value} for key, values in ideas.items() for value in values if chosen.get(key) != value]


def point_name(point: dict[str, object]) -> str:
    """`loss.dis_weight: 0.2, loss.tau: 1.0` -> `dis_weight0.2-tau1.0` (an experiment name's part)."""
    return "-".join(f"{k.split('.')[-1]}{v}" for k, v in point.items()) or "defaults"


@dataclass(frozen=True)
class Run:
    """One search run as read back from its experiment: variant, grid point, seed, its params.yaml and its
    metrics/cl.json."""

    name: str
    variant: str
    point: dict
    seed: int
    params: dict
    metrics: dict


def task_order(run_params: dict) -> list[str]:
    """The training order of a run's `tasks` section (raw params.yaml: each task names its predecessor)."""
    prev = {name: link["prev"] for name, link in run_params["tasks"].items()}
    order, last = [], E0
    for _ in prev:
        last = next(name for name, p in prev.items() if p == last)
        order.append(last)
    return order


def check_validation(run: Run, held_out: list[str] | None) -> None:
    """Refuse a run whose metrics are not validation metrics of the selection order (module docstring)."""
    val = run.params.get("data", {}).get("val_per_class", 0)
    if not val:
        raise InputError(f"selection reads validation metrics only: run {run.name} was evaluated on the test split "
                         f"(its data.val_per_class is {val}); queue the search with compare.search_setting")
    if held_out is not None and task_order(run.params) == list(held_out):
        raise InputError(f"selection never reads the held-out order: run {run.name} trained in it ({', '.join(held_out)})")


def choose(runs: list[Run], metric: str, held_out: list[str] | None = None) -> dict:
    """Per variant, the grid point with the highest mean over seeds of validation `metric` (the first in grid
    order on a tie), and every point's mean, std and values."""
    if metric not in METRICS:
        raise ParamsError(f"compare.search_metric: {metric!r} is not one of {METRICS}")
    for run in runs:
        check_validation(run, held_out)
    out: dict[str, dict] = {}
    for run in runs:
        variant = out.setdefault(run.variant, {"points": {}})
        point = variant["points"].setdefault(point_name(run.point), {"point": run.point, "seeds": [], "values": [],
                                                                     "others": {m: [] for m in METRICS if m != metric}})
        point["seeds"].append(run.seed)
        point["values"].append(float(run.metrics[metric]))
        for m, values in point["others"].items():  # kept to read the choice by, never to make it
            values.append(float(run.metrics[m]))
    for variant in out.values():
        for point in variant["points"].values():
            values = np.asarray(point["values"])
            point["mean"] = round(float(values.mean()), 2)
            point["std"] = round(float(values.std(ddof=1)), 2) if len(values) > 1 else None  # undefined for one seed
            point["others_mean"] = {m: round(float(np.mean(v)), 2) for m, v in point.pop("others").items()}
        pick(variant)
    return {"metric": metric, "split": "validation", "variants": out}


def pick(entry: dict) -> dict:
    """The entry's best point by mean (the first of equals, in the order its points are listed: grid order)."""
    best = max(entry["points"].values(), key=lambda p: p["mean"])  # max keeps the first of equals
    entry["chosen"], entry["score"] = best["point"], best["mean"]
    return entry


def chosen_name(entry: dict) -> str:
    """The name of an entry's choice among its points (matched by value: JSON keeps no key order, the names do)."""
    return next(n for n, p in entry["points"].items() if p["point"] == entry["chosen"])


def kept_points(earlier: dict, grid_names: list[str], seeds: list[int]) -> list[str]:
    """The points of an earlier entry that an extended search does not run again: those of the grid measured at the
    same seeds, except the earlier choice (run again to show the earlier points stand for this commit)."""
    again = chosen_name(earlier)
    return [n for n, p in earlier["points"].items() if n in grid_names and n != again and p["seeds"] == list(seeds)]


def extend(earlier: dict, new: dict, grid_names: list[str], variant: str) -> dict:
    """An extended grid's entry: the earlier entry's kept points beside the new runs' points, in grid order, and the
    choice over them all. The earlier choice was run again: if it does not give the value the earlier entry holds,
    the code under the earlier points has changed and they do not stand for this commit (refused: run the grid)."""
    again = chosen_name(earlier)
    before, now = earlier["points"][again], new["points"].get(again)
    if now is None or now["values"] != before["values"]:
        raise InputError(f"--extend: {variant}'s earlier choice {again} gave {now and now['values']} here and "
                         f"{before['values']} on {earlier.get('baseline', 'its commit')}: the earlier points do not "
                         "stand for this commit; search the whole grid")
    points = {**{n: earlier["points"][n] for n in earlier["points"] if n != again}, **new["points"]}
    entry = {**new, "points": {n: points[n] for n in grid_names if n in points}}
    kept = [n for n in entry["points"] if n not in new["points"]]
    entry["kept"] = {"points": kept, **{k: earlier[k] for k in ("command", "baseline") if k in earlier}}
    return pick(entry)


PROTOCOL = ("metric", "split", "order", "setting")  # what a choice is made by


def same_protocol(a: dict | None, b: dict) -> bool:
    return a is not None and all(a.get(k) == b.get(k) for k in PROTOCOL)


def merge(earlier: dict | None, new: dict, order: list[str]) -> dict:
    """A search of some variants replaces their entries and keeps the others' from an earlier selection, when that
    one chose by the same metric on the same split, order and setting: a search takes hours, so its variants may
    run one at a time, each committed as it ends (each entry names its own command and baseline commit). Another
    protocol's selection is replaced whole. Variants in `order` (compare.search's), then any others."""
    kept = earlier["variants"] if same_protocol(earlier, new) else {}
    variants = {**kept, **new["variants"]}
    ranked = [v for v in order if v in variants] + [v for v in variants if v not in order]
    return {**new, "variants": {v: variants[v] for v in ranked}}


def markdown(selection: dict) -> str:
    """The search table: every variant's grid points with their validation metric, the chosen one in bold."""
    metric = selection["metric"]
    others = [m for m in METRICS if m != metric]
    lines = [f"| variant | values | {metric} (validation) | {' | '.join(others)} | seeds |", "|---|---|---|---|---|---|"]
    for variant, entry in selection["variants"].items():
        for name, p in entry["points"].items():
            cell = f"{p['mean']:.2f} ± {p['std']:.2f}" if len(p["seeds"]) > 1 else f"{p['mean']:.2f}"
            chosen = p["point"] == entry["chosen"]
            rest = " | ".join(f"{p['others_mean'][m]:.2f}" if "others_mean" in p else "" for m in others)
            lines.append(f"| {variant} | {'**' + name + '**' if chosen else name} | {'**' + cell + '**' if chosen else cell} "
                         f"| {rest} | {', '.join(map(str, p['seeds']))} |")
    lines += ["", f"Mean ± sample std over seeds (one seed: its value) of validation {metric} (training images carved out per class, "
                  "the test split never written), in the selection order; the chosen values in bold. The other "
                  "metrics (means, validation too) are for reading the choice, which they do not enter."]
    made = [f"- {v}: `{e['command']}` on {e['baseline']}"
            + (f", {e['seconds']} s" if e.get("seconds") is not None else "")
            + (f"; {len(e['kept']['points'])} points kept from `{e['kept'].get('command')}` on "
               f"{e['kept'].get('baseline')} (its choice, run again here, gave the same value)" if e.get("kept") else "")
            for v, e in selection["variants"].items() if "command" in e]
    if made:
        lines += ["", "Each variant's runs: the command and the commit they were queued on.", "", *made]
    return "\n".join(lines) + "\n"
