"""The MTIL-regime and baseline-ordering checks (pipeline/tools/regime.py) on hand-made matrices."""
from __future__ import annotations

import pytest

from pipeline.tools import regime

# Three tasks (10, 20, 25 % chance). Row 0 = E0 zero-shot, row j = after task j.
E0 = [40.0, 60.0, 70.0]
CHANCE = [10.0, 20.0, 25.0]
FINETUNE = [
    E0,
    [80.0, 40.0, 50.0],  # task 1 learned (+40), transfer to 2, 3 falls
    [60.0, 90.0, 45.0],  # task 2 learned (+30)
    [55.0, 70.0, 95.0],  # task 3 learned (+25)
]


def test_regime_by_hand():
    checks = regime.regime(E0, CHANCE, FINETUNE)
    assert checks["e0_over_chance_min"]["value"] == pytest.approx(2.8)  # min(40 / 10, 60 / 20, 70 / 25)
    assert checks["e0_zero_shot_mean"]["value"] == pytest.approx(56.67)
    assert checks["finetune_gain_mean"]["value"] == pytest.approx((40 + 30 + 25) / 3, abs=0.01)
    assert checks["finetune_last_minus_e0_mean"]["value"] == pytest.approx((55 + 70 + 95) / 3 - 170 / 3, abs=0.01)
    # Transfer: task 2 <- 40; task 3 <- mean(50, 45) = 47.5; E0's: mean(60, 70) = 65.
    assert checks["e0_minus_finetune_transfer"]["value"] == pytest.approx(65 - (40 + 47.5) / 2)
    assert all(c["holds"] for c in checks.values())


def test_regime_fails_where_nothing_is_left_to_learn():
    high = [95.0, 94.0, 96.0]
    flat = [high, [96.0, 90.0, 92.0], [90.0, 95.0, 90.0], [85.0, 88.0, 97.0]]
    checks = regime.regime(high, CHANCE, flat)
    assert not checks["e0_zero_shot_mean"]["holds"]
    assert not checks["finetune_gain_mean"]["holds"]
    assert not checks["finetune_last_minus_e0_mean"]["holds"]


def test_ordering():
    scores = {
        "finetune": {"transfer": 40, "average": 50, "last": 70},
        "lwf": {"transfer": 50, "average": 55, "last": 65},
        "wise_ft": {"transfer": 45, "average": 60, "last": 60},
        "zscl": {"transfer": 60, "average": 65, "last": 75},
    }
    checks = regime.ordering(scores)
    assert len(checks) == 7 and all(c["holds"] for c in checks.values())
    scores["lwf"]["average"] = 49
    checks = regime.ordering(scores)
    assert not checks["average: lwf > finetune"]["holds"] and checks["average: lwf > finetune"]["value"] == -1
    assert regime.ordering({"finetune": scores["finetune"]}) == {}
