"""`python -m pipeline.tools.travel`: the default's metrics under another CPU's kernels, read against the committed
comparison's seed interval. The fresh-clone run itself is bench_repro's (tested there); here it is replaced by a
stand-in, so what is tested is the reading: the row, the interval, the verdict, the record, the table."""
from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from pipeline.tools import seed_stats, travel
from pipeline.tools.machine import machine

PARAMS = {"train": {"method": "dual_teacher", "seed": 0}, "data": {"seed": 0}}
SUMMARY = {"setting": {}, "seed_keys": ["data.seed", "train.seed"],
           "variant_overrides": {"finetune": {"train.method": "finetune"}, "dual_teacher": {"train.method": "dual_teacher"}},
           "variants": {v: {"seeds": [0, 1, 2], **{m: {"values": values} for m in travel.METRICS}}
                        for v, values in (("finetune", [50.0, 52.0, 54.0]), ("dual_teacher", [60.0, 61.0, 62.0]))}}


def test_the_prediction_interval_is_wider_than_the_means_by_sqrt_n_plus_1():
    entry = seed_stats.prediction([60.0, 61.0, 62.0])
    # mean 61, std 1, t_{0.975, 2} = 4.3027: half-width 4.3027 * sqrt(1 + 1/3) = 4.968
    assert entry["mean"] == 61.0 and entry["std"] == 1.0 and entry["pi95"] == [56.03, 65.97]
    ci = seed_stats.paired([60.0, 61.0, 62.0])["ci95"]  # the mean's: 4.3027 / sqrt(3) = 2.484
    assert ci == [58.52, 63.48]
    assert seed_stats.prediction([60.0])["pi95"] is None


def test_the_reference_is_the_default_rows_spread_and_a_run_is_read_against_it():
    ref = travel.reference(SUMMARY, PARAMS)
    assert (ref["variant"], ref["seed"]) == ("dual_teacher", 0)
    assert ref["metrics"]["transfer"]["pi95"] == [56.03, 65.97]
    assert travel.verdict({"metrics": {"transfer": 56.5, "average": 66.0, "last": 61.0}}, ref) == \
        {"transfer": True, "average": False, "last": True}
    assert travel.reference({"variants": SUMMARY["variants"]}, PARAMS) is None  # an older file: no row known
    assert travel.verdict({"metrics": {}}, None) is None


def test_a_run_records_its_capped_kernels(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert machine()["kernel_env"] == {"ATEN_CPU_CAPABILITY": "default"}
    monkeypatch.delenv("ATEN_CPU_CAPABILITY")
    assert "kernel_env" not in machine()


def test_main_writes_each_setting_against_the_committed_row(tmp_path, monkeypatch, capsys):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    (tmp_path / "metrics/compare.json").write_text(json.dumps(SUMMARY))
    (tmp_path / "metrics/cl.json").write_text(json.dumps({"transfer": 60.0, "average": 61.0, "last": 62.0}))
    (tmp_path / "metrics/zero_shot.json").write_text(json.dumps({"transfer": 66.0}))
    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    seen = []

    def fake_run(venv, target, env, read):
        seen.append((target, env))
        return {"seconds": 1.0, "read": {"metrics": {"transfer": 70.0, "average": 61.5, "last": 62.5},
                                         "e0_transfer": 58.0, "machine": {"cpu_capability": "DEFAULT"}}}

    monkeypatch.setattr(travel, "one_run", fake_run)
    travel.main(["--kernels", "sse42", "--out", "metrics/travel.json"])
    assert seen == [("repro", travel.KERNELS["sse42"])]
    out = json.loads((tmp_path / "metrics/travel.json").read_text())
    assert out["runs"]["sse42"]["within"] == {"transfer": False, "average": True, "last": True}
    assert out["committed"]["e0_transfer"] == 66.0 and out["reference"]["seed"] == 0
    table = travel.markdown(out)
    assert "70.00 (outside)" in table and "61.50 (inside)" in table and "ATEN_CPU_CAPABILITY=default" in table
    with pytest.raises(SystemExit) as info:
        travel.main(["--kernels", "arm"])
    assert info.value.code == 2 and "--kernels: 'arm'" in capsys.readouterr().err
