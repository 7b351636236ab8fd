"""What `pipeline.tools.compare` reads of one run, how it summarises seeds, and the tables and figure it writes.

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


# --- compression branch ------------------------------------------------------------------------------------

def collect_distill(read: Reader = io.read_json) -> dict:
    """One run of the branch: the distilled student (and the teacher) and the same student alone."""
    return {"distill": read(paths.DISTILL), "alone": read(paths.STUDENT_ALONE_METRICS),
            "cost": read(paths.DISTILL_COST), "alone_cost": read(paths.STUDENT_ALONE_COST)}


def summarise_token(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    """The token student's ablation: each head's accuracy distilled, the fused one alone, and the gain."""
    variants = {}
    for variant, results in runs.items():
        heads = results[0]["distill"]["heads"]
        variants[variant] = {
            "seeds": seeds, "student_params": results[0]["distill"]["parameters"],
            "student": {h: mean_std([r["distill"]["heads"][h] for r in results]) for h in heads},
            "alone": mean_std([r["alone"]["accuracy"] for r in results]),
            "gain": paired([r["distill"]["accuracy"] - r["alone"]["accuracy"] for r in results]),
        }
    return {"seeds": seeds, "variants": variants, "teacher": runs_teacher(runs)}


def _reference_line(summary: dict, what: str) -> str:
    # the runs' own teacher when they carry it (a compare.distill_setting may change the target and teacher)
    ref = summary.get("teacher") or summary["reference"]["distill"]
    seeds = ", ".join(map(str, summary["seeds"]))
    setting = ", ".join(f"`{k}: {'null' if v is None else v}`" for k, v in summary.get("setting", {}).items())
    over_seeds = ref.get("teacher_accuracy_over_seeds")
    redrawn = summary.get("seed_keys") and "teacher.seed" in summary["seed_keys"]
    accuracy = f"{_cell(over_seeds)} % (a teacher per seed)" if redrawn and over_seeds else f"{ref['teacher_accuracy']:.2f} %"
    seeds_set = _seeds_clause(summary, "`distill.seed`; the teacher is the same in every run")
    return (f"Target `{ref['task']}` ({ref['classes']} classes); teacher `{ref['teacher']}` ({ref['teacher_parameters']:,} "
            f"parameters) at {accuracy}." + (f" Setting (every row): {setting}." if setting else "") +
            f" Mean ± sample std over seeds {seeds} ({seeds_set}), test accuracy in %; gains paired by seed, "
            f"with their 95 % interval (Student's t). {what} " + _runs_clause(summary))


def _runs_clause(summary: dict) -> str:
    command = summary.get("command", "make compare-distill")
    if summary.get("seconds") is None:  # `--collect`: tabled from experiments already run
        return f"Runs of `{command}`, tabled from DVC's experiments (`--collect`)."
    return f"All runs in one `{command}` ({summary['seconds']} s)."


def markdown_token(summary: dict) -> str:
    lines = ["| variant | student params | distilled: class | dist | fused | alone: fused | gain (fused) |",
             "|---|---|---|---|---|---|---|"]
    for variant, e in summary["variants"].items():
        s = e["student"]
        lines.append(f"| {variant} | {e['student_params']:,} | {_cell(s['class'])} | {_cell(s['dist'])} | "
                     f"{_cell(s['fused'])} | {_cell(e['alone'])} | {_gain_cell(e['gain'])} |")
    lines += ["", _reference_line(summary, '"Alone": the same student, seed, initial weights and budget trained on '
                                          'the labels alone (stage `student_alone`).')]
    if "throughput" in summary:
        t = summary["throughput"]
        lines += [
            "",
            f"CPU inference (`make bench`, batch {t['setup']['batch_size']}, {t['setup']['threads']} threads, median of "
            f"{t['setup']['repeats']} batches): teacher {t['teacher']['images_per_s']:,.0f} images/s, student "
            f"{t['student']['images_per_s']:,.0f} images/s ({t['speedup']:.2f}x), with "
            f"{100 * t['parameter_ratio']:.1f} % of the teacher's parameters.",
        ]
    return "\n".join(lines) + "\n"


def summarise_distill(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    """The methods side by side: per variant its student and method, accuracy, gain over the same student
    alone, added parameters and training step time (median over seeds); the student alone once per student."""
    variants, alone = {}, {}
    for variant, results in runs.items():
        d = results[0]["distill"]
        variants[variant] = {
            "seeds": seeds, "student": d["student"], "method": d["method"], "rule": d.get("rule"),
            "select_per": d.get("select_per"),
            "accuracy": mean_std([r["distill"]["accuracy"] for r in results]),
            "gain": paired([r["distill"]["accuracy"] - r["alone"]["accuracy"] for r in results]),
            "added_parameters": d["added_parameters"],
            "step_ms": round(1000 * float(np.median([r["cost"]["step_seconds"] for r in results])), 2),
        }
        alone.setdefault(d["student"], {
            "parameters": results[0]["alone"]["parameters"],
            "accuracy": mean_std([r["alone"]["accuracy"] for r in results]),
            "step_ms": round(1000 * float(np.median([r["alone_cost"]["step_seconds"] for r in results])), 2),
        })
    return {"seeds": seeds, "variants": variants, "alone": alone, "teacher": runs_teacher(runs)}


def runs_teacher(runs: dict[str, list[dict]]) -> dict:
    """The teacher the runs distilled from (target, classes, network, accuracy), as they recorded it: a --set
    sweep on another target has its own, not the committed default run's."""
    first = next(iter(runs.values()))
    teacher = {k: first[0]["distill"][k] for k in ("task", "classes", "teacher", "teacher_parameters", "teacher_accuracy")}
    # Each seed's own teacher where the seeds redraw it (compare.DISTILL_SEEDS): its accuracy over those seeds.
    teacher["teacher_accuracy_over_seeds"] = mean_std([r["distill"]["teacher_accuracy"] for r in first])
    return teacher


def markdown_distill(summary: dict) -> str:
    lines = ["| student | method | accuracy | gain over alone | added params | step (ms) | step / FitNet's |",
             "|---|---|---|---|---|---|---|"]
    for student, a in summary["alone"].items():
        fitnet = [e["step_ms"] for e in summary["variants"].values() if e["student"] == student and e["method"] == "fitnet"]
        lines.append(f"| {student} ({a['parameters']:,}) | alone | {_cell(a['accuracy'])} | | 0 | {a['step_ms']:.1f} | |")
        for variant, e in summary["variants"].items():
            if e["student"] != student:
                continue
            per_image = ", per image" if e.get("select_per") == "sample" else ""
            name = e["method"] + (f" ({e['rule']}{per_image})" if e["rule"] else "")
            ratio = f"{e['step_ms'] / fitnet[0]:.2f}" if fitnet else ""
            lines.append(f"| | {name} | {_cell(e['accuracy'])} | {_gain_cell(e['gain'])} | {e['added_parameters']:,} | "
                         f"{e['step_ms']:.1f} | {ratio} |")
    lines += ["", _reference_line(summary, '"Alone": the same student, seed, initial weights and budget on the labels '
                                          'alone. Step: median over seeds of the training wall time per step '
                                          '(teacher forward, rematching and adapters included).')]
    return "\n".join(lines) + "\n"


# --- online distillation (cohort) --------------------------------------------------------------------------

def collect_cohort(read: Reader = io.read_json) -> dict:
    """One run of the cohort: every network's accuracy, the ensemble's, and the training cost."""
    return {"cohort": read(paths.COHORT_METRICS), "cost": read(paths.COHORT_COST)}


def summarise_cohort(runs: dict[str, list[dict]], seeds: list[int]) -> dict:
    """Per variant (a method on the same cohort): each network's accuracy, their mean and the ensemble's, the
    mean network's gain over the same cohort alone (the variant whose method is `alone`, paired by seed), and
    the step time and peak memory (medians over seeds)."""
    alone = next((r for r in runs.values() if r[0]["cohort"]["method"] == "alone"), None)
    variants = {}
    for variant, results in runs.items():
        c = results[0]["cohort"]
        entry = {
            "seeds": seeds, "method": c["method"], "networks": c["networks"], "parameters": c["parameters"],
            "network_accuracy": [mean_std([r["cohort"]["network_accuracy"][i] for r in results])
                                 for i in range(len(c["networks"]))],
            "accuracy": mean_std([r["cohort"]["accuracy"] for r in results]),
            "ensemble": mean_std([r["cohort"]["ensemble_accuracy"] for r in results]),
            "step_ms": round(1000 * float(np.median([r["cost"]["step_seconds"] for r in results])), 2),
            "peak_memory_mb": round(float(np.median([r["cost"]["peak_memory_mb"] for r in results])), 1),
        }
        if alone is not None:
            entry["gain"] = paired([r["cohort"]["accuracy"] - a["cohort"]["accuracy"] for r, a in zip(results, alone)])
            entry["network_gain"] = [paired([r["cohort"]["network_accuracy"][i] - a["cohort"]["network_accuracy"][i]
                                               for r, a in zip(results, alone)]) for i in range(len(c["networks"]))]
        variants[variant] = entry
    return {"seeds": seeds, "variants": variants, "task": alone[0]["cohort"]["task"] if alone else None}


def markdown_cohort(summary: dict) -> str:
    variants = summary["variants"]
    first = next(iter(variants.values()))
    names = [f"{n} ({p:,})" for n, p in zip(first["networks"], first["parameters"])]
    alone_ms = next((e["step_ms"] for e in variants.values() if e["method"] == "alone"), None)
    lines = ["| method | " + " | ".join(names) + " | mean network | gain over alone | ensemble | step (ms) | "
             "step / alone's | peak memory (MB) |",
             "|---" * (len(names) + 7) + "|"]
    for variant, e in variants.items():  # by the variant's name: an ablation of a method reads apart from it
        ratio = f"{e['step_ms'] / alone_ms:.2f}" if alone_ms else ""
        gain = _gain_cell(e["gain"]) if "gain" in e and e["method"] != "alone" else ""
        network_gains = e.get("network_gain") if e["method"] != "alone" else None
        cells = [_cell(a) + (f" ({_gain_cell(g)})" if network_gains else "")
                 for a, g in zip(e["network_accuracy"], network_gains or e["network_accuracy"])]
        lines.append(f"| {variant} | " + " | ".join(cells) +
                     f" | {_cell(e['accuracy'])} | {gain} | {_cell(e['ensemble'])} | {e['step_ms']:.1f} | {ratio} | "
                     f"{e['peak_memory_mb']:.0f} |")
    seeds = ", ".join(map(str, summary["seeds"]))
    setting = ", ".join(f"`{k}: {'null' if v is None else v}`" for k, v in summary.get("setting", {}).items())
    lines += ["", f"Target `{summary.get('task')}`." + (f" Setting (every row): {setting}." if setting else "") +
              f" Mean ± sample std over seeds {seeds} ("
              + _seeds_clause(summary, "`cohort.seed`") + ": the same images, initial weights and batches for "
              f"every method at a seed), test accuracy in %, in brackets each network's mean gain over itself alone "
              f"(paired by seed, with its 95 % interval, Student's t); ensemble: the mean of the networks' softmax. Step: median over "
              f"seeds of the training wall time per step of the whole cohort. "
              + _runs_clause({"command": "make compare-cohort", **summary})]
    return "\n".join(lines) + "\n"


def plot_cohort(summary: dict, path: Path) -> None:
    """Each method's networks and ensemble: mean test accuracy over seeds, the sample std as error bars."""
    from pipeline.plots import _pyplot, _save

    variants = summary["variants"]
    first = next(iter(variants.values()))
    bars = [f"{n} #{i + 1}" for i, n in enumerate(first["networks"])] + ["ensemble"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(variants), 3.8))
    width = 0.8 / len(bars)
    for j, bar in enumerate(bars):
        entries = [e["network_accuracy"][j] if j < len(first["networks"]) else e["ensemble"] for e in variants.values()]
        xs = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(variants))]
        ax.bar(xs, [e["mean"] for e in entries], width, yerr=[e["std"] for e in entries], capsize=3, label=bar)
    lows = [e["mean"] - e["std"] for v in variants.values() for e in [*v["network_accuracy"], v["ensemble"]]]
    ax.set_ylim(max(0.0, min(lows) - 3), 100)
    ax.set_xticks(range(len(variants)), list(variants))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{summary.get('task')}: mean ± std over seeds {', '.join(map(str, summary['seeds']))}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
