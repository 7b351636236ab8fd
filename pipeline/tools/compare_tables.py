"""What `pipeline.tools.compare` reads of one continual run, how it summarises seeds, and the tables and figures
it writes (the compression branch's and the cohort's: `compression_tables`).

Pure functions of JSON-like dicts (plus the reads of one run's metrics files in `collect_*`), so they are tested
without running a single experiment."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pipeline import io, paths
from pipeline.tools.seed_stats import _cell, _gain_cell, mean_std, paired  # noqa: F401 (the tables' cells)

CL_KEYS = ("transfer", "average", "last")
HEADLINE = "dual_teacher"  # the variant every other is paired against (the ablation: its first variant)
# Reads one metrics file of a run: from the workspace (the committed default run) or from an experiment's
# commit (pipeline.tools.compare.reader).
Reader = Callable[[Path], dict]


def _seeds_clause(summary: dict, default: str) -> str:
    """What a seed of the table redraws, from the keys its runs set (an older summary: `default`)."""
    keys = summary.get("seed_keys")
    return ", ".join(f"`{k}`" for k in keys) if keys else default


# --- continual learning ------------------------------------------------------------------------------------

def collect_cl(read: Reader = io.read_json) -> dict:
    """One run: its summary, accuracy matrix, E0's zero-shot Transfer and each task's training cost."""
    cl, matrix, zero_shot = read(paths.CL), read(paths.MATRIX), read(paths.ZERO_SHOT)
    costs = [read(paths.task_cost(t)) for t in matrix["columns"]]
    return cl | {
        "matrix": matrix["matrix"],
        "tasks": list(matrix["columns"]),  # in training order
        "chance": [zero_shot["tasks"][t]["chance"] for t in matrix["columns"]],
        "zero_shot_transfer": zero_shot["transfer"],
        "seconds_per_task": float(np.mean([c["seconds"] for c in costs])),
        "seconds_by_task": [c["seconds"] for c in costs],
        "peak_memory_mb": max(c["peak_memory_mb"] for c in costs),
    }


def default_row(summary: dict, params: dict) -> tuple[str, int] | None:
    """The (variant, seed) of a comparison whose every override (the shared setting, the variant's own, the seed on
    each seed key) equals `params` (params.yaml as a dict): the run `make repro` makes. None when no row does, or
    the file is from before comparisons recorded their overrides."""
    if not {"setting", "variant_overrides", "seed_keys"} <= set(summary):
        return None
    missing = object()

    def dotted(key: str) -> object:
        tree = params
        for part in key.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return missing
            tree = tree[part]
        return tree

    for variant, own in summary["variant_overrides"].items():
        for seed in summary["variants"][variant]["seeds"]:
            sets = {**summary["setting"], **own, **{key: seed for key in summary["seed_keys"]}}
            if all(dotted(key) == value for key, value in sets.items()):
                return variant, seed
    return None


def average_curve(matrix) -> list[float]:
    """Average accuracy over all tasks of each row: E0, then the model after each task."""
    return [round(float(np.mean(row)), 2) for row in matrix]


def summarise_cl(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    variants = {}
    for variant, results in runs.items():
        entry = {"method": results[0]["method"], "seeds": seeds}
        entry.update({k: mean_std([r[k] for r in results]) for k in CL_KEYS})
        entry["seconds_per_task"] = mean_std([r["seconds_per_task"] for r in results])
        if all("seconds_by_task" in r for r in results):  # task by task: how the cost grows with the classes seen
            entry["tasks"] = results[0]["tasks"]
            entry["seconds_by_task"] = [round(float(np.median(s)), 1) for s in zip(*(r["seconds_by_task"] for r in results))]
            entry["classes_seen"] = np.cumsum([round(100 / c) for c in results[0]["chance"]]).tolist()
        entry["peak_memory_mb"] = mean_std([r["peak_memory_mb"] for r in results])
        # E0 of each run: the same for every seed unless the seeds redraw it (compare.seed_keys)
        entry["zero_shot_transfer"] = mean_std([r["zero_shot_transfer"] for r in results])
        entry["curve"] = [round(float(v), 2) for v in np.mean([average_curve(r["matrix"]) for r in results], axis=0)]
        # The accuracy matrix, mean over seeds (row 0 = E0): what the regime checks and per-task tables read.
        entry["matrix"] = np.round(np.mean([r["matrix"] for r in results], axis=0), 2).tolist()
        variants[variant] = entry
    headline = HEADLINE if HEADLINE in runs else next(iter(runs), None)
    for variant, results in runs.items():
        if variant != headline and len(results) == len(runs[headline]):
            # Seed by seed against the headline: the same data, E0 and batches at a seed, so the seed's noise cancels.
            variants[variant]["vs_headline"] = {k: paired([r[k] - h[k] for r, h in zip(results, runs[headline])])
                                                for k in CL_KEYS}
    return {"seeds": seeds, "variants": variants, "headline": headline}


def markdown_paired(summary: dict) -> str:
    """Each variant minus the headline, seed by seed: mean and 95 % interval; "inside the noise" where it holds 0."""
    rows = [(v, e["vs_headline"]) for v, e in summary["variants"].items() if "vs_headline" in e]
    if not rows:
        return ""
    lines = [f"| variant - {summary['headline']} | Transfer | Average | Last |", "|---|---|---|---|"]
    for variant, diff in rows:
        cells = [_gain_cell(diff[k]) + (" (noise)" if diff[k].get("inside_noise") else "") for k in CL_KEYS]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def regime_checks(summary: dict) -> dict:
    """The MTIL-regime checks (from the `finetune` variant's own mean matrix, E0's row included) and the
    baselines' ordering (pipeline/tools/regime.py), read from the variants named after their method (`lwf` is
    `train.method: lwf`, by the convention of compare.variants). Variants of an older output without a
    matrix (merged with --merge) are skipped rather than lost."""
    from pipeline.tools import regime

    ref, variants = summary["reference"], summary["variants"]
    out = {}
    finetune = variants.get("finetune", {}).get("matrix")
    if finetune is not None and "chance" in ref:
        out["regime"] = regime.regime(finetune[0], ref["chance"], finetune)
    by_method = {v: {k: e[k]["mean"] for k in CL_KEYS} for v, e in variants.items() if v == e.get("method")}
    out["ordering"] = regime.ordering(by_method)
    return out


def markdown_checks(checks: dict) -> str:
    lines = ["| check | value | want | holds |", "|---|---|---|---|"]
    for group in ("regime", "ordering"):
        for name, c in checks.get(group, {}).items():
            lines.append(f"| {name} | {c['value']:.2f} | {c['want']} | {'yes' if c['holds'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def markdown_cl(summary: dict) -> str:
    ref = summary["reference"]
    keys = summary.get("seed_keys", ["train.seed"])  # an older summary's seeds set train.seed alone
    redrawn = "pretrain.seed" in keys or "data.seed" in keys
    first = next(iter(summary["variants"].values()), {})
    e0 = _cell(first["zero_shot_transfer"]) if redrawn and "zero_shot_transfer" in first else f"{ref['zero_shot_transfer']:.2f}"
    lines = [
        "| variant | method | Transfer | Average | Last | train s / task | peak memory (MB) |",
        "|---|---|---|---|---|---|---|",
        f"| E0 zero-shot | - | {e0} | - | - | - | - |",
    ]
    for variant, entry in summary["variants"].items():
        cells = [_cell(entry[k]) for k in CL_KEYS]
        # Median over seeds for time: one run slowed by another job on the machine must not move the figure.
        seconds = float(np.median(entry["seconds_per_task"]["values"]))
        cost = f"{seconds:.1f} | {entry['peak_memory_mb']['mean']:.0f}"
        lines.append(f"| {variant} | {entry['method']} | " + " | ".join(cells) + f" | {cost} |")
    seeds = ", ".join(map(str, summary["seeds"]))
    lines += [
        "",
        f"Mean ± sample std over seeds {seeds} (" + ", ".join(f"`{k}`" for k in keys)
        + ("; each seed redraws what these keys seed" if redrawn else "; E0 is the same for every run")
        + "), accuracy in %. "
        "Train s / task: wall time of a task's training loop (teacher features included, evaluation not), mean "
        "over tasks, median over seeds; peak memory: the train process's peak resident set (CPU) or CUDA allocation, "
        f"largest over tasks, mean over seeds. "
        + _runs_time(summary),
    ]
    cost_table = markdown_cost(summary)
    if cost_table:
        lines += ["", "Training wall time of each task in seconds (median over seeds; the task's training loop, teacher "
                  f"features included, evaluation not; {summary.get('train_steps') or 'train.steps'} steps a task), in "
                  "training order with the classes seen by then: how each method's cost grows along the chain.", "",
                  cost_table.rstrip("\n")]
    paired_table = markdown_paired(summary)
    if paired_table:
        lines += ["", f"Differences from `{summary['headline']}`, paired by seed (each seed's runs share data, E0 and "
                  "batches): mean and 95 % interval over seeds (Student's t); \"noise\": the interval holds 0.", "",
                  paired_table.rstrip("\n")]
    if summary.get("checks"):
        lines += ["", "Is the benchmark in the MTIL regime, and do the baselines rank as published (`pipeline/tools/regime.py`, "
                  "from the mean matrices above)?", "", markdown_checks(summary["checks"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _runs_time(summary: dict) -> str:
    command = summary.get("command", "make compare")
    seconds = f"{summary['seconds']} s" if summary.get("seconds") is not None else "time not recorded: collected or resumed"
    if summary.get("merged"):
        return (f"Runs of `{command}` ({seconds} in all); {', '.join(summary['merged'])} re-run later (`--merge`), "
                "so its time is from another run.")
    return f"All runs in one `{command}` ({seconds})."


def markdown_cost(summary: dict) -> str:
    """Seconds of each task's training, task by task, each variant; a last column against fine-tuning's at the last
    task where the table has it. Empty for an older summary without per-task times."""
    rows = {v: e for v, e in summary["variants"].items() if "seconds_by_task" in e}
    if not rows:
        return ""
    first = next(iter(rows.values()))
    base = rows.get("finetune", {}).get("seconds_by_task")
    head = [f"{t} ({n})" for t, n in zip(first["tasks"], first["classes_seen"])]
    lines = ["| variant | " + " | ".join(head) + (" | last task / finetune's |" if base else " |"),
             "|---|" + "---|" * (len(head) + bool(base))]
    for variant, entry in rows.items():
        ratio = f" | {entry['seconds_by_task'][-1] / base[-1]:.2f}x |" if base else " |"
        lines.append(f"| {variant} | " + " | ".join(f"{x:.1f}" for x in entry["seconds_by_task"]) + ratio)
    return "\n".join(lines) + "\n"


def plot_curves(summary: dict, path: Path) -> None:
    """One figure, all variants: average accuracy on all tasks after each task (E0 first); data beside it."""
    from pipeline.plots import _pyplot, _save

    columns = io.read_json(paths.MATRIX)["columns"]
    e0 = average_curve(summary["reference"]["matrix"])[0]
    rows = [{"variant": v, "after": ["e0", *columns], "average": [e0, *e["curve"][1:]]} for v, e in summary["variants"].items()]
    io.write_json(paths.COMPARE_CURVES, rows)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for row in rows:
        ax.plot(range(len(row["after"])), row["average"], marker="o", label=row["variant"])
    ax.set_xticks(range(len(columns) + 1), ["E0", *columns], rotation=30, ha="right")
    ax.set_xlabel("after training on")
    ax.set_ylabel("average accuracy on all tasks (%)")
    ax.set_title(f"mean over seeds {', '.join(map(str, summary['seeds']))}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
