"""`python -m pipeline.tools.bench_seen`: its smoke form times every variant at MTIL order I's task 11 (classes
scaled down) from synthetic data alone and writes every field. No timing is asserted: the figures of a busy
CPU mean nothing."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import REPO

from pipeline.tools import bench_seen

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = ["--class-fraction", "0.01", "--image-size", "32", "--vision-width", "32", "--text-width", "32", "--layers", "1",
         "--batch", "4", "--steps", "2", "--warmup", "0", "--samples", "3"]


def test_smoke_run_writes_every_variant(tmp_path, monkeypatch):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runtime"]["threads"] = 1
    raw["data"]["root"] = str(REPO / "images")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)  # no data/, no models/: any read of a stage output would fail
    threads = torch.get_num_threads()
    try:
        bench_seen.main([*SMOKE, "--out", str(tmp_path / "bench_seen.json")])
    finally:
        torch.set_num_threads(threads)
    out = json.loads((tmp_path / "bench_seen.json").read_text())
    setting = out["setting"]
    # SUN397 after the ten others, each at 1 % of its classes rounded up, at least 2: ten times 2, then 4
    assert setting["task"] == "SUN397" and setting["task_classes"] == 4 and setting["seen_classes"] == 24
    assert setting["seen_prompts"] > setting["task_prompts"] == 4 * 2  # SUN397: ZSCL's 2 templates
    assert set(out["methods"]) == {"finetune", "dual_teacher current", "dual_teacher seen", "dual_teacher seen K=3"}
    assert out["methods"]["finetune"]["vs_finetune"] == 1.0
    assert all(m["median_ms"] > 0 for m in out["methods"].values())


def test_the_full_seen_variant_can_be_left_out():
    from pipeline.tools.bench_seen import variants

    assert list(variants([8, 32])) == ["finetune", "dual_teacher current", "dual_teacher seen",
                                       "dual_teacher seen K=8", "dual_teacher seen K=32"]
    assert "dual_teacher seen" not in variants([8], full_seen=False)
    assert variants([8], full_seen=False)["dual_teacher seen K=8"]["loss.dis_seen_sample"] == 8
