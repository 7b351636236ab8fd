"""The room probe (pipeline/room.py): its plan of runs (the tables' params, seed by seed), the criterion's
arithmetic on hand-made rows, the table commands, and one micro probe end to end on the Fashion-MNIST fixture
(two seeds, one in a parallel process's file merged back)."""
from __future__ import annotations

import copy

import yaml

from conftest import run_in
from pipeline import io
from pipeline.tools import compare, room
from pipeline.params import Params
from test_fashion_mnist import write_fixture


def _entry(mean: float, std: float) -> dict:
    return {"mean": mean, "std": std, "values": []}


def test_the_criterion_reads_the_gaps_and_the_stds():
    rows = {"teacher": {"accuracy": _entry(90.0, 0.3)},
            "alone a": {"accuracy": _entry(86.0, 1.0)},  # 4.0 under, std 1.0: meets (both bounds inclusive)
            "alone b": {"accuracy": _entry(86.5, 0.2)},  # 3.5 under: no room
            "alone c": {"accuracy": _entry(80.0, 1.2)},  # unsteady
            "cohort alone": {"accuracy": _entry(85.0, 0.5), "network_accuracy": [_entry(84.0, 0.4), _entry(86.0, 0.9)],
                             "ensemble_accuracy": _entry(87.0, 0.3)}}
    v = room.verdict(rows)
    assert v["alone a"] == {"steady": True, "room_under_teacher": True, "gap": 4.0, "meets": True}
    assert v["alone b"]["room_under_teacher"] is False and v["alone b"]["meets"] is False
    assert v["alone c"]["steady"] is False and v["alone c"]["meets"] is False
    assert v["cohort alone"]["meets"] is True
    rows["cohort alone"]["ensemble_accuracy"] = _entry(86.0, 0.3)  # not above the better network
    rows["cohort alone"]["network_accuracy"][0] = _entry(97.0, 0.1)  # and under 4 points from 100 %
    v = room.verdict(rows)["cohort alone"]
    assert v == {"steady": True, "room_under_100": False, "ensemble_above_networks": False, "meets": False}


def _params(micro_params: dict, root) -> Params:
    raw = copy.deepcopy(micro_params)
    raw["compare"]["seeds"] = [0, 1]
    raw["compare"]["distill_variants"] = {"sh_kd": {"distill.student": "shufflenet_v2_x0_5", "distill.method": "kd"},
                                          "sh_fitnet": {"distill.student": "shufflenet_v2_x0_5",
                                                        "distill.method": "fitnet"}}
    raw["compare"]["distill_setting"] = {"distill.lr": 0.005, "teacher.lr": 0.01}
    raw["compare"]["cohort_setting"] = {"cohort.lr": 0.02}
    raw["compare"]["room_setting"] = {"target.benchmark": "fashion_mnist", "target.task": "fashion_mnist",
                                      "target.root": str(root), "target.train_per_class": 2,
                                      "target.test_per_class": 1, "teacher.arch": "resnet10t", "teacher.epochs": 1,
                                      "teacher.batch_size": 8, "distill.epochs": 1, "distill.batch_size": 8,
                                      "cohort.epochs": 1, "cohort.batch_size": 8, "runtime.threads": 1}
    return Params.from_dict(raw)


def test_the_plan_gives_the_tables_params_seed_by_seed(micro_params, tmp_path):
    params = _params(micro_params, write_fixture(tmp_path))
    extra = params.compare.room_setting
    runs = room.plan(params, [0, 1], extra)
    assert [(r[0], r[2]) for r in runs] == [("teacher", 0), ("alone shufflenet_v2_x0_5 stem None", 0),
                                           ("cohort alone", 0), ("teacher", 1),
                                           ("alone shufflenet_v2_x0_5 stem None", 1), ("cohort alone", 1)]
    student = runs[1][3]  # one run per distinct student, with the params its table's variant gets
    assert student == compare.overrides(params, "sh_kd", 0, compare.BRANCHES["distill"], extra)
    assert student["distill.lr"] == 0.005 and student["distill.seed"] == 0
    assert runs[2][3]["cohort.lr"] == 0.02 and runs[2][3]["cohort.method"] == "alone" and runs[2][3]["cohort.seed"] == 0
    assert runs[3][3]["teacher.seed"] == 1
    restemmed = room.plan(params, [0], {**extra, "distill.stem_stride": 2})  # a probe's --set names its rows truly
    assert restemmed[1][0] == "alone shufflenet_v2_x0_5 stem 2" and restemmed[1][3]["distill.stem_stride"] == 2
    commands = room.table_commands(params, extra, "fm")
    assert len(commands) == 3 and all(f"--set target.root={tmp_path}" in c and c.endswith("--tag fm") for c in commands)
    assert all(f"--set {k}=" in commands[0] for k in extra)
    assert "--branch token" in commands[2] and "--set teacher.lr=0.01" in commands[2]  # the probe's teacher


def test_a_micro_probe_writes_every_row_and_merges_a_parallel_seed(micro_params, tmp_path, monkeypatch, capsys):
    root = write_fixture(tmp_path / "data_root")
    (tmp_path / "images").mkdir()
    raw = copy.deepcopy(micro_params)
    raw["compare"].update({k: v for k, v in _params(micro_params, root).compare.model_dump().items()
                           if k in ("seeds", "distill_variants", "distill_setting", "cohort_setting", "room_setting")})
    raw["cohort"]["embed_dim"] = 16
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    run_in(tmp_path, monkeypatch, "pipeline.tools.room", "--seeds", "1", "--out", "one.json")
    assert capsys.readouterr().out.count("seed 1:") == 3
    run_in(tmp_path, monkeypatch, "pipeline.tools.room", "--out", "all.json", "--merge", "one.json")
    out = capsys.readouterr().out
    assert out.count("seed 0:") == 3 and "seed 1:" not in out  # seed 1 came from the other file
    result = io.read_json(tmp_path / "all.json")
    assert sorted(result["runs"]) == ["alone shufflenet_v2_x0_5 stem None", "cohort alone", "teacher"]
    assert all(sorted(by_seed) == ["0", "1"] for by_seed in result["runs"].values())
    assert result["rows"]["teacher"]["accuracy"]["values"] == [result["runs"]["teacher"][s]["accuracy"] for s in "01"]
    assert set(result["criterion"]) == {"alone shufflenet_v2_x0_5 stem None", "cohort alone"}
    assert len(result["rows"]["cohort alone"]["network_accuracy"]) == 2
    assert result["command"] == "python -m pipeline.tools.room --merge one.json --out all.json"  # as it ran
    capsys.readouterr()
    # Another cohort recipe: the teacher's and the students' runs are reused, the cohort's run again.
    run_in(tmp_path, monkeypatch, "pipeline.tools.room", "--set", "cohort.lr=0.03", "--out", "all.json")
    out = capsys.readouterr().out
    assert "cohort alone seed 0:" in out and "cohort alone seed 1:" in out and "teacher seed" not in out
    again = io.read_json(tmp_path / "all.json")
    assert again["runs"]["teacher"] == result["runs"]["teacher"] and again["setting"]["cohort.lr"] == 0.03
    assert again["command"] == "python -m pipeline.tools.room --set cohort.lr=0.03 --out all.json"
    # Rows chosen by --only (every run reused here): the file's command names them, quoted for a shell.
    run_in(tmp_path, monkeypatch, "pipeline.tools.room", "--set", "cohort.lr=0.03", "--only", "teacher",
           "alone shufflenet_v2_x0_5 stem None", "--out", "all.json")
    assert "seed 0:" not in capsys.readouterr().out
    assert io.read_json(tmp_path / "all.json")["command"] == (
        "python -m pipeline.tools.room --set cohort.lr=0.03 --only teacher 'alone shufflenet_v2_x0_5 stem None' "
        "--out all.json")
