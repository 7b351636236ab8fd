"""`python -m pipeline.tools.e0_spread`: E0 pretrained once per seed as the pretrain stage does it (seed 0 of the
micro configuration gives the stage's own zero-shot row), with the spread over seeds written to JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import io, paths
from pipeline.tools import e0_spread
from pipeline.stages import prepare, pretrain, zero_shot


def test_each_seed_is_the_pretrain_stages_e0_and_the_spread_is_summarised(tmp_path, monkeypatch, micro_params):
    micro_params["pretrain"].update(steps=3, warmup_steps=1)
    micro_params["data"].update(reference_images=2, reference_captions=2, corpus_size=64, train_per_class=2, test_per_class=2)
    micro_params["data"]["root"] = "images"
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(micro_params))
    prepare.main([])
    pretrain.main([])
    zero_shot.main([])  # E0's row 0: a stage of its own
    stage_row = io.read_json(paths.ZERO_SHOT)
    e0_spread.main(["--seeds", "0", "1", "--out", "spread.json"])
    out = json.loads(Path("spread.json").read_text())
    seed0 = out["per_seed"]["0"]
    assert seed0["transfer"] == stage_row["transfer"]  # the stage's E0, not a look-alike
    assert seed0["tasks"] == {n: t["accuracy"] for n, t in stage_row["tasks"].items()}
    values = [out["per_seed"][s]["transfer"] for s in ("0", "1")]
    assert out["transfer"]["range"] == pytest.approx(max(values) - min(values), abs=0.01)
    assert out["transfer"]["min"] <= out["transfer"]["mean"] <= out["transfer"]["max"]
    assert set(out["per_task"]) == set(micro_params["tasks"]) and out["machine"]["torch"]
    with pytest.raises(SystemExit) as info:
        e0_spread.main(["--seeds", "0", "--set", "pretrain.nope=1"])
    assert info.value.code == 2
    # --resume pretrains only the seeds the file lacks and keeps the others' rows; another recipe is refused
    trained = []
    real = e0_spread.pretrain
    monkeypatch.setattr(e0_spread, "pretrain", lambda clip, *a, **k: trained.append(1) or real(clip, *a, **k))
    e0_spread.main(["--seeds", "0", "1", "2", "--out", "spread.json", "--resume"])
    resumed = json.loads(Path("spread.json").read_text())
    assert len(trained) == 1 and resumed["seeds"] == [0, 1, 2]
    assert {s: resumed["per_seed"][s]["tasks"] for s in ("0", "1")} == {s: out["per_seed"][s]["tasks"] for s in ("0", "1")}
    with pytest.raises(SystemExit) as info:
        e0_spread.main(["--seeds", "0", "--set", "pretrain.lr=0.01", "--out", "spread.json", "--resume"])
    assert info.value.code == 2 and len(trained) == 1
    # a --set of the data section builds the corpus and tasks every seed pretrains and is read on
    class Built(Exception):
        pass

    def build_corpus(data, names):
        raise Built(data.corpus_templates)

    monkeypatch.setattr(e0_spread, "build_corpus", build_corpus)
    with pytest.raises(Built) as built:
        e0_spread.main(["--seeds", "0", "--set", "data.corpus_templates=true", "--out", "other.json"])
    assert built.value.args == (True,)
