"""The compression branch's and the cohort's comparison tables (`pipeline.tools.compare --branch distill | token |
cohort`): what one run yields, the seeds' summary, the markdown table and the figure.

Pure functions of JSON-like dicts (plus the reads of one run's metrics files in `collect_*`), as the continual
tables in `compare_tables`, whose shared pieces (the run reader, the seeds clause) they use."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io, paths
from pipeline.tools.compare_tables import Reader, _seeds_clause
from pipeline.tools.seed_stats import _cell, _gain_cell, mean_std, paired


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
