"""Figures over seeds, as every comparison table gives them: mean and sample std, and paired differences with
their 95 % interval (Student's t), and the cells the tables and docs print them in."""
from __future__ import annotations

import numpy as np
from scipy import stats


def mean_std(values) -> dict:
    """Mean and sample std (ddof=1; 0 for one value) rounded to 2 decimals, with the raw values."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": round(float(values.mean()), 2), "std": round(std, 2), "values": values.tolist()}


def paired(differences) -> dict:
    """Paired differences over seeds (a method minus its baseline, seed by seed): `mean_std` plus the 95 %
    interval of the mean, mean ± t_{0.975, n-1} std / sqrt(n) (Student's t: n is 3 to 5 here, far from normal),
    and whether it holds 0 (`inside_noise`: the gap is not told apart from seed noise). One value: no interval."""
    entry = mean_std(differences)
    n = len(entry["values"])
    if n < 2:
        return entry | {"ci95": None, "inside_noise": True}
    values = np.asarray(entry["values"], dtype=np.float64)
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))
    low, high = float(values.mean()) - half, float(values.mean()) + half
    return entry | {"ci95": [round(low, 2), round(high, 2)], "inside_noise": bool(low <= 0 <= high)}


def _cell(entry: dict) -> str:
    return f"{entry['mean']:.2f} ± {entry['std']:.2f}"


def _gain_cell(entry: dict) -> str:
    """A paired gain: its mean and 95 % interval over seeds, e.g. `+1.20 [0.31, 2.09]` (the std where an older
    summary has no interval)."""
    if entry.get("ci95") is None:
        return f"{entry['mean']:+.2f} ± {entry['std']:.2f}"
    low, high = entry["ci95"]
    return f"{entry['mean']:+.2f} [{low:+.2f}, {high:+.2f}]"


def prediction(values) -> dict:
    """`mean_std` plus the 95 % prediction interval of one more run, mean ± t_{0.975, n-1} std sqrt(1 + 1/n):
    where a single run of the same params should fall given the spread over seeds (not the mean's interval,
    which narrows with n). Fewer than 2 values: no interval."""
    entry = mean_std(values)
    n = len(entry["values"])
    if n < 2:
        return entry | {"pi95": None}
    values = np.asarray(entry["values"], dtype=np.float64)
    half = float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) * np.sqrt(1 + 1 / n))
    return entry | {"pi95": [round(float(values.mean()) - half, 2), round(float(values.mean()) + half, 2)]}
