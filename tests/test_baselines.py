"""The continual baselines lwf, lwm, zscl and wise_ft on micro tasks: terms, teachers, end-of-task weights."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import paths
from pipeline.params import Params, ParamsError
from pipeline.continual import all_methods, get_method
from pipeline.continual.inputs import TaskInputs
from pipeline.continual.gradcam import class_grad_cam, feature_map_and_features
from pipeline.continual.trainer import train_task
from pipeline.continual.weights import floating_state
from pipeline.data.facets import build_facet_corpus, build_facet_task
from pipeline.data.reference import build_reference, save_reference
from pipeline.data import (
    load_task,
    save_corpus,
    save_task,
)
from pipeline.losses import attention_distillation, cosine_logits
from pipeline.models import clip as clip_lib
from pipeline.stages import prototypes as prototypes_stage
from pipeline.training import Batch
from tests.test_methods import make_context  # the train stage's assembly of a task's inputs

TASKS = {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}}
BASELINES = ("lwf", "lwm", "zscl", "wise_ft")


def make_workspace(root, arch: str, image_size: int):
    """Micro params, two prepared tasks, a tiny corpus, a random E0 with its prototypes, and a trained 'shape'
    (as tests/test_methods.py, plus the corpus and the reference set zscl reads)."""
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["tasks"] = TASKS
    raw["data"]["benchmark"] = "facets"
    raw["data"]["root"] = str(Path("images").resolve())  # must exist (a DVC dependency); read by the folder benchmark only
    raw["data"]["image_size"] = image_size
    raw["model"]["arch"] = arch
    raw["train"].update(steps=1, batch_size=8, warmup_steps=1)  # one step: this machine is slow; the ensemble test sets 2
    raw["loss"]["zscl_ref_batch"] = 8
    raw["eval"]["batch_size"] = 32
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "params.yaml").write_text(yaml.safe_dump(raw))
        for name in TASKS:
            task = build_facet_task(name, image_size=image_size, train_per_class=3, test_per_class=2, seed=0)
            save_task(task, paths.task_dir(name))
        save_corpus(build_facet_corpus(image_size=image_size, size=32, seed=0), paths.CORPUS)
        save_reference(build_reference(image_size=image_size, images=24, captions=12, seed=0), paths.REFERENCE)
        torch.manual_seed(0)
        clip_lib.save(clip_lib.build(arch, image_size), paths.model_dir("e0"), {"name": "e0"})
        prototypes_stage.main([])
        params = Params.load()
        ctx = make_context(params, "shape", "finetune")
        train_task(get_method("finetune")(ctx))
        clip_lib.save(ctx.student, paths.model_dir("shape"), {"name": "shape"})
    return root, params


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("baselines"), "synth-vit-tiny", 32)


@pytest.fixture(scope="module")
def rn_workspace(tmp_path_factory):
    # 64 px: at 32 px the ModifiedResNet's last map is 1x1, where Grad-CAM is a constant (see gradcam.py).
    return make_workspace(tmp_path_factory.mktemp("baselines_rn"), "synth-rn-tiny", 64)




def with_loss(params: Params, train: dict | None = None, **changes) -> Params:
    raw = params.model_dump(mode="json")
    raw["loss"].update(changes)
    raw["train"].update(train or {})
    return Params.from_dict(raw)


def first_batch(ctx: TaskInputs, n: int = 8):
    idx = torch.arange(n)
    return ctx.task.train_images[idx], ctx.task.train_labels[idx], idx


def weighted_total(method, terms):
    return sum(method.weights()[k] * v for k, v in terms.items())


def test_registry_has_the_baselines():
    assert set(BASELINES) <= set(all_methods())


@pytest.mark.parametrize("bad", [
    {"lwm_form": "l2"}, {"kd_first_task": "all"}, {"wise_alpha": 1.5}, {"zscl_ref_batch": 1}, {"zscl_text": "both"},
])
def test_config_rejects_bad_baseline_params_naming_the_key(bad):
    raw = yaml.safe_load(Path("params.yaml").read_text())
    raw["loss"].update(bad)
    (key,) = bad
    with pytest.raises(ParamsError, match=f"loss.{key}"):
        Params.from_dict(raw)


def test_committed_params_have_the_baseline_defaults():
    loss = Params.load().loss
    assert (loss.kd_temperature, loss.kd_first_task, loss.lwm_form, loss.wise_alpha) == (2.0, "current", "sigmoid", 0.5)


# ---------------------------------------------------------------- Grad-CAM and L_AD on real towers
@pytest.mark.parametrize("arch, size, before, after", [
    ("synth-rn-tiny", 64, "visual.conv1.weight", "visual.attnpool.c_proj.weight"),
    ("synth-vit-tiny", 32, "visual.conv1.weight", "visual.transformer.resblocks.2.mlp.c_fc.weight"),
])
def test_attention_distillation_trains_the_student_only(arch, size, before, after):
    """dL_AD/dtheta_student != 0, also for the layers after A (reached only through dy/dA, i.e. create_graph);
    the frozen teacher gets nothing. Without create_graph those layers would get no gradient (spec, L_AD)."""
    torch.manual_seed(0)
    teacher = clip_lib.freeze(clip_lib.build(arch, size))
    torch.manual_seed(1)
    student = clip_lib.build(arch, size)
    student.model.train()
    images = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8)
    texts = torch.randn(5, 64)

    a_t, f_t = feature_map_and_features(teacher, images, leaf=True)
    logits_t = cosine_logits(f_t, texts, teacher.logit_scale)
    b = logits_t.argmax(dim=1)
    q_teacher = class_grad_cam(a_t, logits_t.gather(1, b[:, None]).squeeze(1), create_graph=False).detach()

    def student_maps(create_graph):
        a_s, f_s = feature_map_and_features(student, images)
        scores = cosine_logits(f_s, texts, student.logit_scale).gather(1, b[:, None]).squeeze(1)
        return class_grad_cam(a_s, scores, create_graph=create_graph)

    attention_distillation(student_maps(True), q_teacher).backward()
    grads = {n: p.grad for n, p in student.model.named_parameters()}
    assert grads[before] is not None and grads[before].abs().sum() > 0  # through A
    assert grads[after] is not None and grads[after].abs().sum() > 0  # through dy/dA: needs create_graph
    assert all(not p.requires_grad and p.grad is None for p in teacher.model.parameters())

    student.model.zero_grad(set_to_none=True)
    attention_distillation(student_maps(False), q_teacher).backward()
    assert student.model.get_parameter(after).grad is None  # the no-grad map: L_AD never reaches these


@pytest.mark.parametrize("arch, size", [("synth-rn-tiny", 32), ("synth-rn-tiny", 64), ("synth-vit-tiny", 32)])
def test_grad_cam_maps_of_a_model_are_normalised_and_features_unchanged(arch, size):
    torch.manual_seed(0)
    clip = clip_lib.freeze(clip_lib.build(arch, size))
    images = torch.randint(0, 256, (6, 3, size, size), dtype=torch.uint8)
    a, features = feature_map_and_features(clip, images, leaf=True)
    # The hook changes nothing of the forward pass.
    torch.testing.assert_close(torch.nn.functional.normalize(features, dim=-1), clip_lib.encode_images(clip, images).detach())
    logits = cosine_logits(features, torch.randn(3, 64), clip.logit_scale)
    q = class_grad_cam(a, logits.max(dim=1).values, create_graph=False)
    assert q.shape == (6, a.shape[2] * a.shape[3]) and (q >= 0).all()
    norms = q.norm(dim=1)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))


def test_vit_output_patch_tokens_get_no_gradient_so_the_map_is_the_last_blocks_input():
    """Why gradcam.py takes a ViT's map before its last block: the pooled class token ignores the patch tokens
    the last block outputs, so a Grad-CAM there would be 0 everywhere."""
    torch.manual_seed(0)
    clip = clip_lib.build("synth-vit-tiny", 32)
    outputs = []
    handle = clip.model.visual.transformer.resblocks[-1].register_forward_hook(lambda m, args, out: outputs.append(out))
    features = clip.model.encode_image(clip_lib.image_input(clip, torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)))
    handle.remove()
    (grad,) = torch.autograd.grad(features.sum(), outputs[0])
    assert grad[:, 1:].abs().max() == 0 and grad[:, 0].abs().max() > 0


# ---------------------------------------------------------------- the methods on micro tasks
@pytest.mark.parametrize("name", sorted(all_methods()))  # the registry: a new method is tested here unasked
@pytest.mark.parametrize("task", ["shape", "colour"])
def test_every_registered_method_trains_a_first_and_a_second_task(workspace, monkeypatch, name, task):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(params, task, name)
    method = get_method(name)(ctx)
    before = copy.deepcopy(ctx.student.model.state_dict())
    logged = train_task(method)
    assert set(logged) == {f"loss/{k}" for k in method.weights()} | {"loss/total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    after = ctx.student.model.state_dict()
    assert torch.equal(before["logit_scale"], after["logit_scale"])
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not ctx.student.model.training


@pytest.mark.parametrize("name", ["lwf", "lwm"])
def test_first_task_distillation_starts_at_zero(workspace, monkeypatch, name):
    """Task 1 with kd_first_task=current: the student is E0 and so is the teacher, so L_kd (and L_AD) are 0."""
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, lwm_form="softmax"), "shape", name)
    method = get_method(name)(ctx)
    assert method.head.is_current and method.head.teacher_text.shape[0] == len(ctx.task.classes)
    terms = method.terms(Batch(*first_batch(ctx)))
    assert terms["kd"].item() == pytest.approx(0.0, abs=1e-4)
    if name == "lwm":
        assert terms["ad"].item() == pytest.approx(0.0, abs=1e-3)


@pytest.mark.parametrize("name", ["lwf", "lwm"])
def test_kd_first_task_none_is_finetuning_on_task_one(workspace, monkeypatch, name):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, kd_first_task="none"), "shape", name)
    method = get_method(name)(ctx)
    assert method.head is None
    terms = method.terms(Batch(*first_batch(ctx)))
    assert all(terms[k].item() == 0.0 and not terms[k].requires_grad for k in terms if k != "ce")


@pytest.mark.parametrize("name", ["lwf", "lwm"])
def test_second_task_distils_over_the_previous_tasks_classes(workspace, monkeypatch, name):
    root, params = workspace
    monkeypatch.chdir(root)
    shape = load_task(paths.task_dir("shape"))
    ctx = make_context(params, "colour", name, tasks={"shape": shape})
    assert ctx.base_tasks == (shape,)  # taken from the tasks given, not read again
    method = get_method(name)(ctx)
    head = method.head
    assert not head.is_current and head.teacher_text.shape[0] == len(shape.classes)
    # The teacher's logits: from its image features (lwf), or computed with its Grad-CAM maps (lwm).
    every = torch.arange(len(ctx.task.train_labels))
    teacher = (head.teacher_text, head.teacher_image(None, every) if name == "lwf" else method.teacher_logits)
    assert teacher[1].shape[0] == len(ctx.task.train_labels)
    teacher_state = [t.clone() for t in teacher]
    terms = method.terms(Batch(*first_batch(ctx)))
    weighted_total(method, terms).backward()
    assert all(not t.requires_grad for t in teacher)
    assert all(torch.equal(a, b) for a, b in zip(teacher_state, teacher))
    if name == "lwm":
        assert method.teacher_maps.shape == (len(ctx.task.train_labels), 64) and not method.teacher_maps.requires_grad
        assert int(method.top_class.max()) < len(shape.classes)


def test_lwm_attention_term_alone_trains_a_resnet_student(rn_workspace, monkeypatch):
    """On the CNN tower (64 px): after one fine-tuning step away from the teacher, L_AD > 0 and its gradient
    reaches the student's image tower, also after the feature map (attnpool). Both the spec's last stage (a 2x2
    map) and the default `lwm_stage` 3 (4x4)."""
    root, params = rn_workspace
    monkeypatch.chdir(root)
    for task, stage, cells in (("shape", 4, 4), ("colour", 3, 16)):
        ctx = make_context(with_loss(params, ce_weight=0.0, lwm_beta=0.0, lwm_stage=stage), task, "lwm")
        method = get_method("lwm")(ctx)
        assert method.teacher_maps.shape[1] == cells
        images, labels, idx = first_batch(ctx)
        with torch.no_grad():  # move the student off its teacher: at equality L_AD and its gradient are 0
            for p in ctx.student.model.visual.parameters():
                p.add_(0.05 * torch.randn_like(p))
        terms = method.terms(Batch(images, labels, idx))
        assert terms["ad"].item() > 0
        ctx.student.model.zero_grad(set_to_none=True)
        weighted_total(method, terms).backward()
        attn = ctx.student.model.visual.attnpool.c_proj.weight.grad
        assert attn is not None and attn.abs().sum() > 0


@pytest.mark.parametrize("source", ["reference", "corpus_oracle"])
def test_zscl_reference_distillation(workspace, monkeypatch, source):
    root, params = workspace
    monkeypatch.chdir(root)
    params = with_loss(params, zscl_reference=source)
    first = get_method("zscl")(make_context(params, "shape", "zscl"))
    assert first.terms(Batch(*first_batch(first.ctx)))["zscl"].item() == pytest.approx(0.0, abs=1e-4)  # student is E0
    second = get_method("zscl")(make_context(params, "colour", "zscl"))
    images, labels, idx = first_batch(second.ctx)
    terms = second.terms(Batch(images, labels, idx))
    assert terms["zscl"].item() > 0  # the 'shape' model has drifted from E0 on the corpus
    weighted_total(second, terms).backward()
    assert all(p.grad is None for p in second.e0.model.parameters())
    # Reference batches are seeded by train.seed and the task: a fresh method draws the same ones.
    again = get_method("zscl")(make_context(params, "colour", "zscl"))
    images, captions = again.reference_batch()
    same_images, same_captions = get_method("zscl")(make_context(params, "colour", "zscl")).reference_batch()
    assert torch.equal(images, same_images) and captions == same_captions
    # As published, every image is scored against the whole unpaired pool; the oracle pairs each with its caption.
    assert len(captions) == (12 if source == "reference" else len(images))


def test_zscl_l2_is_the_squared_distance_from_the_tasks_starting_weights(workspace, monkeypatch):
    """ZSCL's scripts' --l2 1: zero where the task starts; after moving one weight by delta, sum(delta^2), and
    its gradient 2 * delta there; off (no term) with zscl_l2 0."""
    root, params = workspace
    monkeypatch.chdir(root)
    assert params.loss.zscl_l2 == 1.0
    ctx = make_context(params, "colour", "zscl")
    method = get_method("zscl")(ctx)
    batch = first_batch(ctx)
    assert method.terms(Batch(*batch))["l2"].item() == 0.0 and method.weights()["l2"] == 1.0
    name, weight = next((n, p) for n, p in ctx.student.model.named_parameters() if p.ndim == 2)
    delta = 0.01 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        weight += delta
    l2 = method.terms(Batch(*batch))["l2"]
    torch.testing.assert_close(l2, (delta ** 2).sum(), rtol=1e-4, atol=1e-8)
    ctx.student.model.zero_grad(set_to_none=True)
    l2.backward()
    torch.testing.assert_close(weight.grad, 2 * delta, rtol=1e-3, atol=1e-6)
    off = get_method("zscl")(make_context(with_loss(params, zscl_l2=0.0), "colour", "zscl"))
    assert "l2" not in off.terms(Batch(*batch)) and "l2" not in off.weights()


@pytest.mark.parametrize("method_name, key", [("zscl", "zscl_ensemble_every"), ("dual_teacher", "dual_ensemble_every")])
def test_weight_ensemble_is_the_mean_of_the_snapshots(workspace, monkeypatch, method_name, key):
    """ensemble_every=1, 2 steps: theta_hat = mean(theta_0 (start), theta_1, theta_2) (ZSCL's merge_we), for
    ZSCL and for dual-teacher's data-free use of it."""
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, train={"steps": 2, "warmup_steps": 2}, **{key: 1}), "colour", method_name)
    method = get_method(method_name)(ctx)
    snapshots = [floating_state(ctx.student.model)]
    step = method.after_step

    def recording_after_step():
        snapshots.append(floating_state(ctx.student.model))
        step()

    method.after_step = recording_after_step
    train_task(method)
    assert len(snapshots) == 3
    final = ctx.student.model.state_dict()
    for key in snapshots[0]:
        expected = (snapshots[0][key] + snapshots[1][key] + snapshots[2][key]) / 3
        torch.testing.assert_close(final[key], expected, rtol=1e-5, atol=1e-6, msg=key)
    changed = [k for k in snapshots[0] if not torch.equal(snapshots[2][k], final[k])]
    assert changed  # the average is not simply the last weights


def test_dual_teacher_keeps_its_trained_weights_without_the_ensemble(workspace, monkeypatch):
    """dual_ensemble_every 0 (the default): the task ends on the last step's weights, bit for bit."""
    root, params = workspace
    monkeypatch.chdir(root)
    assert params.loss.dual_ensemble_every == 0
    ctx = make_context(with_loss(params, train={"steps": 2, "warmup_steps": 2}), "colour", "dual_teacher")
    method = get_method("dual_teacher")(ctx)
    last, step = {}, method.after_step

    def recording_after_step():
        step()
        last.update(floating_state(ctx.student.model))

    method.after_step = recording_after_step
    train_task(method)
    final = ctx.student.model.state_dict()
    assert last and all(torch.equal(final[k], v) for k, v in last.items())


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_wise_ft_interpolates_with_the_previous_model(workspace, monkeypatch, alpha):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, wise_alpha=alpha), "colour", "wise_ft")
    prev = copy.deepcopy(ctx.student.model.state_dict())
    method = get_method("wise_ft")(ctx)
    finetuned = {}
    finish = method.finish

    def recording_finish():
        finetuned.update(floating_state(ctx.student.model))
        finish()

    method.finish = recording_finish
    train_task(method)
    after = ctx.student.model.state_dict()
    if alpha == 0.0:
        assert all(torch.equal(prev[k], after[k]) for k in prev)  # bit-identical to E_{m-1}
    elif alpha == 1.0:
        assert all(torch.equal(finetuned[k], after[k]) for k in finetuned)  # the fine-tuned model as trained
    else:
        key = "visual.conv1.weight"
        assert not torch.equal(prev[key], finetuned[key])
        assert torch.equal(after[key], (1 - alpha) * prev[key] + alpha * finetuned[key])
    assert torch.equal(prev["logit_scale"], after["logit_scale"])
