"""The compression branch's stages on a micro configuration: target -> teacher -> distill and student_alone,
both teacher kinds, the metrics they write, and the errors that must come before any compute."""
from __future__ import annotations

import json
import re

import pytest
import torch

from conftest import make_micro_params, make_project, run_in
from pipeline.data.facets import build_facet_task
from pipeline.compression import data as D
from pipeline import metrics
from pipeline.params import Params


@pytest.fixture(scope="module")
def branch(micro_run):
    """The session's micro copy where every stage ran once by hand (conftest.py): its compression branch."""
    project, outputs = micro_run
    return project, {name: outputs[name] for name in ("target", "teacher", "student_alone", "distill")}


def _read(project, rel):
    return json.loads((project.root / rel).read_text())


def test_teacher_metrics_and_checkpoint(branch):
    project, out = branch
    teacher = _read(project, "metrics/teacher.json")
    assert teacher["arch"] == "resnet10t" and teacher["parameters"] > 4_000_000
    assert 0 <= teacher["accuracy"] <= 100
    assert len(teacher["per_class"]) == 28  # one test image per class
    meta = _read(project, "models/cnn/model.json")
    assert meta["kind"] == "cnn" and len(meta["classes"]) == 28
    assert "resnet10t" in out["teacher"]


def test_distill_metrics(branch):
    project, _ = branch
    summary = _read(project, "metrics/distill.json")
    assert summary["task"] == "count+colour" and summary["classes"] == 28
    assert summary["method"] == "token" and summary["student"] == "token"
    assert set(summary["heads"]) == {"class", "dist", "fused"} and summary["accuracy"] == summary["heads"]["fused"]
    assert all(0 <= v <= 100 for v in summary["heads"].values())
    assert summary["parameters"] < summary["teacher_parameters"] / 4 and summary["added_parameters"] == 0
    assert _read(project, "metrics/distill_cost.json")["step_seconds"] > 0
    assert _read(project, "metrics/student_alone_cost.json")["step_seconds"] > 0
    alone = _read(project, "metrics/student_alone.json")
    assert alone["method"] == "token" and alone["student"] == "token" and len(alone["per_class"]) == 28
    assert alone["parameters"] == summary["parameters"]
    per_class = _read(project, "metrics/distill_per_class.json")
    assert set(per_class) == {"teacher", "student"}
    for name in ("student", "student_alone"):
        meta = _read(project, f"models/{name}/model.json")
        assert meta["kind"] == "student" and meta["method"] == "token"


def test_distill_is_deterministic(branch, monkeypatch):
    """Run again (in-process, the stage's own main()): byte-identical metrics and weights."""
    project, _ = branch
    first = (project.root / "metrics/distill.json").read_bytes()
    weights = (project.root / "models/student/model.safetensors").read_bytes()
    run_in(project.root, monkeypatch, "pipeline.stages.distill")
    assert (project.root / "metrics/distill.json").read_bytes() == first
    assert (project.root / "models/student/model.safetensors").read_bytes() == weights


def test_the_teacher_changes_the_student(branch):
    """Same seed, initial weights, batches and flips for both students: only the teacher's logits differ."""
    project, _ = branch
    from pipeline.models import classifier

    student, _ = classifier.load(project.root / "models/student")
    alone, _ = classifier.load(project.root / "models/student_alone")
    assert not torch.equal(student.head_dist.weight, alone.head_dist.weight)


def test_bench_writes_throughput(branch, monkeypatch, capsys):
    project, _ = branch
    run_in(project.root, monkeypatch, "pipeline.tools.bench", "--repeats", "2", "--warmup", "1", "--variants", "layers_3")
    result = _read(project, "metrics/throughput.json")
    assert result["teacher"]["images_per_s"] > 0 and result["student"]["images_per_s"] > 0
    # a recipe's student, built untrained from its overrides: 3 layers against the micro student's 1
    layers_3 = result["variants"]["layers_3"]
    assert layers_3["overrides"] == {"distill.token.student.n_layers": 3} and layers_3["images_per_s"] > 0
    assert layers_3["parameters"] > result["student"]["parameters"]
    assert layers_3["speedup"] == pytest.approx(layers_3["images_per_s"] / result["teacher"]["images_per_s"], rel=0.01)
    assert result["speedup"] == pytest.approx(result["student"]["images_per_s"] / result["teacher"]["images_per_s"], rel=0.01)
    assert "speed-up" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        run_in(project.root, monkeypatch, "pipeline.tools.bench", "--variants", "nope")
    assert info.value.code == 2 and "--variants: 'nope'" in capsys.readouterr().err


def test_bench_steps_times_every_method(branch, monkeypatch, capsys):
    """Every mbv3_* variant of compare.distill_variants and the student alone, and every cohort variant, get a
    step time; rematching and L-MCL's meta step are timed apart and amortised; ratios against FitNet's step
    and the cohort alone's."""
    project, _ = branch
    run_in(project.root, monkeypatch, "pipeline.tools.bench_steps", "--students", "mbv3", "--rounds", "3", "--warmup", "1",
           "--repeats", "1")
    result = _read(project, "metrics/bench_steps.json")
    params = Params.load()
    assert list(result["distill"]["students"]) == ["mbv3"]
    students = result["distill"]["students"]["mbv3"]["variants"]
    assert set(students) == {"alone"} | {v for v in params.compare.distill_variants if v.startswith("mbv3_")}
    cohort = result["cohort"]["variants"]
    assert set(cohort) == set(params.compare.cohort_variants)
    for name, e in (students | {f"cohort {k}": v for k, v in cohort.items()}).items():
        assert 0 < e["q1_ms"] <= e["median_ms"] <= e["q3_ms"], name
        periodic = {"channel_matching": "rematch_ms", "lmcl": "meta_step_ms"}.get(e["method"])
        if periodic:
            assert e[periodic] > 0 and e["every_steps"] >= 1, name
            assert e["amortised_ms"] == pytest.approx(e["median_ms"] + e[periodic] / e["every_steps"], abs=0.01), name
        else:
            assert "every_steps" not in e and e["amortised_ms"] == e["median_ms"], name
    assert students["mbv3_fitnet"]["per_mbv3_fitnet"] == 1.0 and cohort["alone"]["per_alone"] == 1.0
    assert cohort["lmcl"]["every_steps"] == params.cohort.lmcl.meta_every
    out = capsys.readouterr().out
    assert "x mbv3_fitnet" in out and "x alone" in out


def test_bench_steps_names_an_unknown_student(branch, monkeypatch, capsys):
    project, _ = branch
    with pytest.raises(SystemExit) as e:
        run_in(project.root, monkeypatch, "pipeline.tools.bench_steps", "--students", "vgg")
    assert e.value.code == 2
    assert "--students vgg: no compare.distill_variants named vgg_*" in capsys.readouterr().err


def test_continual_teacher(tmp_path, monkeypatch, capsys):
    """distill.teacher = a CLIP model of the chain: its zero-shot head on the target's class texts teaches."""
    from pipeline.models import clip as clip_lib

    params = make_micro_params()
    params["runtime"]["threads"] = 1
    params["distill"]["teacher"] = "e0"
    project = make_project(tmp_path / "project", params, tmp_path / "scratch")
    torch.manual_seed(0)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project.root)
        clip_lib.save(clip_lib.build("synth-rn-tiny", 32), project.root / "models/e0", {"name": "e0"})
    run_in(project.root, monkeypatch, "pipeline.stages.target")
    run_in(project.root, monkeypatch, "pipeline.stages.distill")
    out = capsys.readouterr().out
    summary = _read(project, "metrics/distill.json")
    assert summary["teacher"] == "continual e0 (zero-shot head)"
    assert "student (token, token)" in out


@pytest.mark.parametrize(
    "change, message",
    [
        ({"teacher": {"arch": "resnet_nope"}}, "teacher.arch: unknown CNN 'resnet_nope'"),
        ({"distill": {"student": "mobilenet_nope", "method": "kd"}}, "distill.student: unknown CNN 'mobilenet_nope'"),
        ({"distill": {"teacher": "nope"}}, "distill.teacher: 'nope' is neither 'cnn' nor a model of the chain"),
        ({"distill": {"token": {"student": {"ft_layers": False}}}}, "l2l needs student.ft_layers"),
        ({"distill": {"token": {"student": {"patch_size": 5}}}}, "distill.token.student.patch_size: 5 does not divide data.image_size 32"),
        ({"distill": {"token": {"student": {"n_heads": 3}}}}, "d_model 64 is not divisible by n_heads 3"),
        ({"target": {"task": "shape+shape"}}, "target.task: 'shape+shape' is not a task of the facets benchmark"),
        ({"distill": {"token": {"mode": "medium"}}}, "distill.token.mode"),
        ({"distill": {"method": "nope"}}, "unknown distillation method 'nope'"),
        ({"distill": {"method": "kd"}}, "method 'kd' cannot train student 'token'"),
        ({"distill": {"student": "mobilenetv2_050"}}, "method 'token' cannot train student 'mobilenetv2_050'"),
        ({"distill": {"method": "fitnet", "student": "mobilenetv2_050", "teacher": "e0"}}, "needs teacher 'cnn'"),
        ({"distill": {"matching": {"rule": "best"}}}, "distill.matching.rule"),
        ({"distill": {"stem_stride": 1}}, "stem_stride is a CNN student's"),
        ({"teacher": {"stem_stride": 4}}, "teacher.stem_stride"),
    ],
)
def test_bad_params_are_named(change, message):
    raw = Params.load().model_dump(mode="json")
    def merge(node, values):
        for key, value in values.items():
            if isinstance(value, dict):
                merge(node[key], value)
            else:
                node[key] = value

    merge(raw, change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("+", r"\+")):
        Params.from_dict(raw)


def test_too_many_unseen_classes_fail_before_training(branch, tmp_path, monkeypatch, capsys):
    """In-process on the session's micro copy (its target is there): the stage stops before training, one
    line, and the student it wrote earlier is untouched."""
    import yaml

    from pipeline.stages import distill

    project, _ = branch
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    params["distill"]["token"]["l2l_unseen_classes"] = 28
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setenv("PIPELINE_PARAMS", str(tmp_path / "params.yaml"))
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.chdir(project.root)
    student = (project.root / "models/student/model.safetensors").read_bytes()
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as info:
            distill.main([])
    finally:
        torch.set_num_threads(threads)  # the stage set the copy's runtime.threads in this process
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert "distill.token.l2l_unseen_classes: 28 leaves no pseudo-seen class of 28" in err
    assert (project.root / "models/student/model.safetensors").read_bytes() == student


# --- pure parts -------------------------------------------------------------------------------------------


def test_joint_task_labels_and_texts():
    task = build_facet_task("count+colour", image_size=32, train_per_class=2, test_per_class=1, seed=0)
    assert len(task.classes) == 28 and task.classes[0] == "one red shape" and task.classes[8] == "two green shapes"
    assert torch.bincount(task.train_labels).tolist() == [2] * 28


def test_imbalance_makes_a_long_tail():
    task = build_facet_task("colour", image_size=32, train_per_class=20, test_per_class=3, seed=0, imbalance=10.0)
    counts = torch.bincount(task.train_labels).tolist()
    assert counts[0] == 20 and counts[-1] == 2 and counts == sorted(counts, reverse=True)
    assert torch.bincount(task.test_labels).tolist() == [3] * 7  # the test split stays balanced
    with pytest.raises(ValueError, match="imbalance"):
        build_facet_task("colour", image_size=32, train_per_class=2, test_per_class=1, seed=0, imbalance=0.5)


def test_class_weights_and_balanced_sampler():
    labels = torch.tensor([0] * 8 + [1] * 2)
    # N / (K n_c): 10 / (2 * 8) = 0.625 and 10 / (2 * 2) = 2.5
    assert D.class_weights(labels, 2).tolist() == [0.625, 2.5]
    drawn = torch.cat(list(D.batches(labels, 100, 20, seed=0, balance="sampler")))
    share = (labels[drawn] == 1).double().mean().item()
    assert 0.45 < share < 0.55  # 20% of the images, half of the draws
    plain = torch.cat(list(D.batches(labels, 5, 4, seed=0, balance="none")))
    assert sorted(plain[:10].tolist()) == list(range(10))  # an epoch: every image once


def test_flips_and_accuracy():
    g = torch.Generator().manual_seed(0)
    flips = D.random_flips(1000, g, enabled=True)
    assert 400 < int(flips.sum()) < 600
    assert not D.random_flips(5, g, enabled=False).any()
    x = torch.arange(4.0).view(1, 1, 1, 4).repeat(2, 1, 1, 1)
    out = D.apply_flips(x, torch.tensor([True, False]))
    assert out[0, 0, 0].tolist() == [3, 2, 1, 0] and out[1, 0, 0].tolist() == [0, 1, 2, 3]
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = torch.tensor([0, 1, 1])
    assert metrics.top1(scores, labels) == pytest.approx(66.6667)
    assert metrics.per_class_top1(scores, labels, ["a", "b"]) == {"a": 100.0, "b": 50.0}


def test_predict_with_the_student(branch, tmp_path, monkeypatch, capsys):
    """`python -m pipeline.tools.predict --model student IMAGE`: the student's classes, fused probabilities."""
    import numpy as np
    from PIL import Image

    from pipeline.data import load_task

    project, _ = branch
    task = load_task(project.root / "data/target")
    files = []
    for i in range(2):
        files.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(np.ascontiguousarray(task.test_images[i].numpy().transpose(1, 2, 0))).save(files[-1])
    run_in(project.root, monkeypatch, "pipeline.tools.predict", "--model", "student", "--top", "2", *files)
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(files[0] + ": ")
    probs = [float(p) for p in re.findall(r" (\d\.\d{3})(?:,|$)", lines[0])]
    assert len(probs) == 2 and probs[0] >= probs[1] and sum(probs) <= 1.0 + 1e-3
    assert any(c in lines[0] for c in task.classes)


def test_cohort_metrics_and_checkpoint(micro_run):
    """Stage `cohort` (MCL on two ShuffleNets by default): every network's accuracy, their mean, the ensemble's."""
    project, _ = micro_run
    summary = _read(project, "metrics/cohort.json")
    assert summary["method"] == "mcl" and summary["networks"] == ["shufflenet_v2_x0_5"] * 2
    assert len(summary["network_accuracy"]) == 2 and all(0 <= a <= 100 for a in summary["network_accuracy"])
    assert summary["accuracy"] == pytest.approx(sum(summary["network_accuracy"]) / 2)
    assert 0 <= summary["ensemble_accuracy"] <= 100
    assert len(_read(project, "metrics/cohort_per_class.json")) == 28
    assert _read(project, "metrics/cohort_cost.json")["step_seconds"] > 0
    meta = _read(project, "models/cohort/model.json")
    assert meta["kind"] == "cohort" and meta["networks"] == summary["networks"] and meta["params"]["method"] == "mcl"
