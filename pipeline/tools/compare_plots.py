"""The comparison figures (PNG; `dvc plots show` / `dvc plots diff` render them, dvc.yaml's top-level `plots:`):
drawn from a comparison's summary alone (metrics/compare*.json), so `python -m pipeline.tools.compare --redraw` and the
comparison itself draw the same figure.

Intervals are the sample std over seeds (the tables' ±); the dots are the seeds themselves."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io, paths
from pipeline.tools.compare_tables import CL_KEYS
from pipeline.plots import _pyplot, _save

# The figures, declared as DVC plots in dvc.yaml's top-level `plots:` (here, not in pipeline/paths.py: no stage
# writes them, and paths.py is a dependency of every stage)
BARS = paths.METRICS / "compare_bars.png"  # Transfer / Average / Last with the seeds
MATRICES = paths.METRICS / "compare_matrices.png"  # the accuracy matrix of every method
ABLATION = paths.METRICS / "compare_ablation.png"
DISTILL_GAINS = paths.METRICS / "compare_distill_gains.png"
COHORT_GAINS = paths.METRICS / "compare_cohort_gains.png"


def _seed_dots(ax, y: float, values, horizontal: bool = True) -> None:
    values = np.asarray(values, dtype=float)
    jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
    if horizontal:
        ax.scatter(values, y + jitter, s=9, color="0.25", zorder=3)
    else:
        ax.scatter(y + jitter, values, s=9, color="0.25", zorder=3)


def matrix_heatmaps(summary: dict, path: Path) -> None:
    """The accuracy matrix of every variant (mean over seeds; row 0 = E0 zero-shot), one panel each."""
    columns = io.read_json(paths.MATRIX)["columns"]
    rows = ["E0", *columns]
    variants = summary["variants"]
    ncols = min(3, len(variants))
    nrows = -(-len(variants) // ncols)
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.9 * ncols, 4.0 * nrows), squeeze=False, layout="constrained")
    for ax, (name, entry) in zip(axes.flat, variants.items()):
        matrix = np.asarray(entry["matrix"], dtype=float)
        im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100)
        for (j, i), value in np.ndenumerate(matrix):
            ax.text(i, j, f"{value:.0f}", ha="center", va="center", fontsize=7, color="w" if value < 60 else "k")
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{name} (Last {entry['last']['mean']:.1f})", fontsize=9)
    for ax in list(axes.flat)[len(variants):]:
        ax.axis("off")
    fig.supxlabel("evaluated on task", fontsize=9)
    fig.supylabel("model after task", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.6, label="accuracy (%)")
    fig.suptitle(f"accuracy matrices, mean over seeds {', '.join(map(str, summary['seeds']))}", fontsize=10)
    _save(fig, path)
    plt.close(fig)


def _metric_panels(summary: dict, path: Path, title: str, reference: str | None = None, bars: bool = True) -> None:
    """Transfer / Average / Last side by side: one row per variant, mean ± std over seeds and the seeds.
    `reference`: a variant whose mean is drawn as a vertical line on every panel (the ablation's base)."""
    variants = summary["variants"]
    names = list(variants)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 0.9 + 0.36 * len(names)), sharey=True)
    for ax, key in zip(axes, CL_KEYS):
        ys = np.arange(len(names))
        means = [variants[n][key]["mean"] for n in names]
        stds = [variants[n][key]["std"] for n in names]
        if bars:
            ax.barh(ys, means, xerr=stds, capsize=3, color="C0", alpha=0.6)
        else:
            ax.errorbar(means, ys, xerr=stds, fmt="o", color="C0", capsize=3)
        for y, n in zip(ys, names):
            _seed_dots(ax, y, variants[n][key]["values"])
        if key == "transfer" and "zero_shot_transfer" in summary.get("reference", {}):
            ax.axvline(summary["reference"]["zero_shot_transfer"], color="C3", ls="--", lw=1, label="E0 zero-shot")
            ax.legend(fontsize=7, loc="lower right")
        if reference in variants:
            ax.axvline(variants[reference][key]["mean"], color="0.5", ls=":", lw=1)
        lows = [m - s for m, s in zip(means, stds)]
        highs = [m + s for m, s in zip(means, stds)] + ([summary["reference"]["zero_shot_transfer"]]
                                                         if key == "transfer" and "reference" in summary else [])
        ax.set_xlim(max(0.0, min(lows) - 4) if not bars else 0, min(100.0, max(highs) + 3))
        ax.set_title(key.capitalize(), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def cl_bars(summary: dict, path: Path) -> None:
    _metric_panels(summary, path, f"accuracy (%), mean ± std over seeds {', '.join(map(str, summary['seeds']))}; "
                                  f"dots: the seeds")


def ablation_dots(summary: dict, path: Path) -> None:
    _metric_panels(summary, path, "ablation of dual-teacher, mean ± std over seeds (dots: the seeds); "
                                  "dotted line: the patent's form", reference="patent", bars=False)


def _gain_rows(summary: dict) -> list[tuple[str, dict]]:
    """(label, gain entry) of every row with a gain over its networks alone."""
    rows = []
    for name, e in summary["variants"].items():
        if "gain" not in e or e.get("method") == "alone":
            continue
        label = e.get("student", "")
        rule = f" ({e['rule']}{', per image' if e.get('select_per') == 'sample' else ''})" if e.get("rule") else ""
        rows.append((f"{label}: {e['method']}{rule}" if label else name, e["gain"]))
    return sorted(rows)


def gains(summary: dict, path: Path) -> None:
    """Each method's gain over the same network(s) alone: mean ± std over seeds, the seeds, lines at 0 and +1."""
    rows = _gain_rows(summary)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.34 * len(rows)))
    for y, (_, g) in enumerate(rows):
        ax.errorbar(g["mean"], y, xerr=g["std"], fmt="o", color="C0", capsize=3)
        _seed_dots(ax, y, g["values"])
    ax.axvline(0, color="k", lw=0.8)
    ax.axvline(1, color="C3", ls=":", lw=1, label="+1 point")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("gain over alone (accuracy points)")
    ax.set_title(f"mean ± std over seeds {', '.join(map(str, summary['seeds']))} (dots: the seeds)", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
