"""Figures of the accuracy matrix (PNG, rendered by `dvc plots show/diff` as images)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display; also keeps PNG bytes independent of the machine's backend
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})


def heatmap(matrix: np.ndarray, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(cols), 1.0 + 0.6 * len(rows)))
    im = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("model after task")
    for (j, i), value in np.ndenumerate(matrix):
        ax.text(i, j, f"{value:.0f}", ha="center", va="center", color="w" if value < 60 else "k", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="accuracy (%)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def task_curves(matrix: np.ndarray, rows: list[str], cols: list[str], path: Path, title: str) -> None:
    """Accuracy on each task (one line per task) after each training step of the chain."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, name in enumerate(cols):
        ax.plot(range(len(rows)), matrix[:, i], marker="o", label=name)
        ax.axvline(i + 1, color="0.9", zorder=0)
    ax.plot(range(len(rows)), matrix.mean(axis=1), "k--", label="mean")
    ax.set_xticks(range(len(rows)), rows, rotation=45, ha="right")
    ax.set_xlabel("model after task")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
