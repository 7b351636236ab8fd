"""Continual methods on a micro task: what each step computes, trains and leaves alone."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml

from pipeline import io, paths
from pipeline.config import Params
from pipeline.continual import METHODS, get_method
from pipeline.continual.base import TaskContext
from pipeline.continual.prototypes import update_prototypes
from pipeline.continual.trainer import train_task
from pipeline.data import save_task
from pipeline.data.facets import build_facet_task
from pipeline.models import clip as clip_lib
from pipeline.stages import prototypes as prototypes_stage

TASKS = {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with micro params, two prepared tasks, a random E0, its prototypes, and a trained 'shape'."""
    root = tmp_path_factory.mktemp("methods")
    raw = yaml.safe_load(open("params.yaml"))
    raw["tasks"] = TASKS
    raw["train"].update(steps=2, batch_size=8)
    raw["eval"]["batch_size"] = 32
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        for name in TASKS:
            save_task(build_facet_task(name, image_size=32, train_per_class=3, test_per_class=2, seed=0), paths.task_dir(name))
        torch.manual_seed(0)
        clip_lib.save(clip_lib.build("synth-vit-tiny", 32), paths.model_dir("e0"), {"name": "e0"})
        prototypes_stage.main([])
        params = Params.load()
        ctx = make_context(params, "shape")
        train_task(get_method("finetune")(ctx))
        clip_lib.save(ctx.student, paths.model_dir("shape"), {"name": "shape"})
        yield root, params


def make_context(params: Params, name: str) -> TaskContext:
    from pipeline.data import load_task

    student = clip_lib.load(paths.model_dir(params.tasks[name].prev))
    return TaskContext(params, name, load_task(paths.task_dir(name)), student, torch.device("cpu"))


def with_loss(params: Params, **changes) -> Params:
    raw = params.model_dump(mode="json")
    raw["loss"].update(changes)
    return Params.from_dict(raw)


def first_batch(ctx: TaskContext, n: int = 8):
    idx = torch.arange(n)
    return ctx.task.train_images[idx], ctx.task.train_labels[idx], idx


def test_registry_has_the_issue_methods():
    assert {"finetune", "dual_teacher"} <= set(METHODS)
    with pytest.raises(ValueError, match="nope"):
        get_method("nope")


def test_finetune_has_only_ce_and_trains_all_but_logit_scale(workspace, monkeypatch):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(params, "colour")
    method = get_method("finetune")(ctx)
    assert set(method.terms(*first_batch(ctx))) == {"ce"}
    before = copy.deepcopy(ctx.student.model.state_dict())
    train_task(method)
    after = ctx.student.model.state_dict()
    assert torch.equal(before["logit_scale"], after["logit_scale"])  # frozen, as in ZSCL
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("visual.") for k in changed) and any(k.startswith("transformer.") for k in changed)


def test_dual_teacher_first_task_distillation_is_zero_at_start(workspace, monkeypatch):
    """On task 1 the student is E0, so L_dis starts at 0 with a finite gradient (spec, step 4)."""
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(params, "shape")
    method = get_method("dual_teacher")(ctx)
    assert ctx.prev_features is None
    terms = method.terms(*first_batch(ctx))
    assert set(terms) == {"ce", "con", "dis"}
    assert terms["dis"].item() == pytest.approx(0.0, abs=1e-4)
    sum(terms.values()).backward()
    grads = [p.grad for p in ctx.student.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("weighting", ["mean", "adaptive"])
def test_dual_teacher_second_task_teaches_only_the_student(workspace, monkeypatch, weighting):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, teacher_weighting=weighting), "colour")
    method = get_method("dual_teacher")(ctx)
    prev, e0 = ctx.prev_features, ctx.e0_features
    assert prev is not None and not torch.equal(prev.image, e0.image)  # E_{m-1} (trained on shape) differs from E0
    snapshot = {k: v.clone() for k, v in {"prev_i": prev.image, "prev_t": prev.text, "e0_i": e0.image, "e0_t": e0.text}.items()}
    initial = method.prototypes.clone()

    images, labels, idx = first_batch(ctx)
    terms = method.terms(images, labels, idx)
    assert terms["dis"].item() > 0  # the student (= E_{m-1}) disagrees with E0
    sum(method.weights()[k] * v for k, v in terms.items()).backward()
    assert not method.prototypes.requires_grad and method.prototypes.grad is None
    assert all(t.grad is None and not t.requires_grad for t in (prev.image, prev.text, e0.image, e0.text))

    # The sliding update uses the student's detached batch features, per the formula.
    with torch.no_grad():
        v = clip_lib.encode_images(ctx.student, images)
    method.after_step()
    expected = update_prototypes(initial, v, labels, params.loss.gamma)
    torch.testing.assert_close(method.prototypes, expected)
    absent = sorted(set(range(len(ctx.task.classes))) - set(labels.tolist()))
    for c in absent:
        assert torch.equal(method.prototypes[c], initial[c])
    for key, value in {"prev_i": prev.image, "prev_t": prev.text, "e0_i": e0.image, "e0_t": e0.text}.items():
        assert torch.equal(value, snapshot[key]), key


def test_dis_weight_zero_removes_distillation_from_the_update(workspace, monkeypatch):
    """With con_weight = dis_weight = 0 a dual-teacher step is a fine-tuning step (same batches, same seed)."""
    root, params = workspace
    monkeypatch.chdir(root)
    states = {}
    for name, p in (("finetune", params), ("dual_teacher", with_loss(params, con_weight=0.0, dis_weight=0.0))):
        ctx = make_context(p, "colour")
        train_task(get_method(name)(ctx))
        states[name] = ctx.student.model.state_dict()
    for key in states["finetune"]:
        torch.testing.assert_close(states["finetune"][key], states["dual_teacher"][key], rtol=1e-5, atol=1e-6)


def test_trainer_is_deterministic(workspace, monkeypatch):
    root, params = workspace
    monkeypatch.chdir(root)
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        ctx = make_context(params, "colour")
        outs.append(train_task(get_method("dual_teacher")(ctx)))
    assert outs[0] == outs[1]


def test_prototypes_stage_output(workspace, monkeypatch):
    root, params = workspace
    monkeypatch.chdir(root)
    saved = io.load_tensors(paths.prototypes_file("shape"))
    assert saved["prototypes"].shape == (6, saved["features"].shape[1])
    torch.testing.assert_close(saved["prototypes"].norm(dim=1), torch.ones(6))


@pytest.mark.parametrize("freeze_bn", [True, False])
def test_frozen_batchnorm_keeps_a_cnn_student_equal_to_its_teacher(freeze_bn):
    """With a CNN tower (BatchNorm), train mode with frozen BN gives E0's own features; plain train mode not."""
    from pipeline.continual.trainer import set_train_mode

    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    clip.model.eval()
    with torch.no_grad():
        teacher = clip_lib.encode_images(clip, images)
        set_train_mode(clip.model, freeze_bn)
        student = clip_lib.encode_images(clip, images)
    assert clip.model.training
    assert torch.allclose(student, teacher, atol=1e-6) == freeze_bn
