"""Does a benchmark resemble MTIL? The checks of the MTIL regime and of the published ordering of the
baselines, computed from `make compare`'s results (mean accuracy matrices over seeds, row 0 = E0).

On MTIL (ZSCL, ICCV 2023, order I) CLIP's zero-shot mean is 65.3 %, from 24.3 (Aircraft) to 89.0 (Pets);
fine-tuning gains a lot on each task it trains on and forgets zero-shot ability on the tasks not yet seen;
and in both orders of ZSCL's tables Transfer and Average rank ZSCL > LwF > fine-tuning and WiSE-FT >
fine-tuning, with ZSCL the highest Last of the baselines. A benchmark on which these do not hold says
nothing about MTIL, whatever it says about the methods. Pure functions of numbers: tested without a run."""
from __future__ import annotations

import numpy as np

from pipeline import metrics

BASELINES = ("finetune", "lwf", "wise_ft", "zscl")


def _check(value: float, holds: bool, want: str) -> dict:
    return {"value": round(float(value), 2), "want": want, "holds": bool(holds)}


def regime(zero_shot: list[float], chance: list[float], finetune_matrix) -> dict[str, dict]:
    """The MTIL regime, from E0's zero-shot row, the chance levels and fine-tuning's accuracy matrix."""
    a = np.asarray(finetune_matrix, dtype=np.float64)
    e0, chance = np.asarray(zero_shot, dtype=np.float64), np.asarray(chance, dtype=np.float64)
    t = len(e0)
    gain = np.mean([a[i + 1, i] - e0[i] for i in range(t)])  # right after training task i, against zero-shot
    e0_transfer = metrics.zero_shot_transfer(e0)
    return {
        "e0_over_chance_min": _check((e0 / chance).min(), (e0 / chance).min() >= 2, ">= 2 (x chance, every task)"),
        "e0_zero_shot_mean": _check(e0.mean(), 40 <= e0.mean() <= 75, "40..75"),
        "finetune_gain_mean": _check(gain, gain >= 15, ">= 15 points over E0 zero-shot, right after each task"),
        "finetune_last_minus_e0_mean": _check(metrics.last(a) - e0.mean(), metrics.last(a) > e0.mean(), "> 0"),
        "e0_minus_finetune_transfer": _check(e0_transfer - metrics.transfer(a), e0_transfer - metrics.transfer(a) >= 10, ">= 10"),
    }


def ordering(scores: dict[str, dict[str, float]]) -> dict[str, dict]:
    """The published ordering of the baselines, from each variant's mean Transfer / Average / Last (keys
    named after the methods; missing baselines are skipped)."""
    out = {}
    have = [b for b in BASELINES if b in scores]
    for key in ("transfer", "average"):
        s = {b: scores[b][key] for b in have}
        for hi, lo in (("zscl", "lwf"), ("lwf", "finetune"), ("wise_ft", "finetune")):
            if hi in s and lo in s:
                out[f"{key}: {hi} > {lo}"] = _check(s[hi] - s[lo], s[hi] > s[lo], "> 0 (difference)")
    if "zscl" in have and len(have) > 1:
        best_other = max(scores[b]["last"] for b in have if b != "zscl")
        out["last: zscl highest of the baselines"] = _check(scores["zscl"]["last"] - best_other, scores["zscl"]["last"] > best_other, "> 0 (difference)")
    return out
