"""Every distillation method of the compression branch, parametrised over its registry: one step runs, every
term is finite, the gradient reaches the student (and the method's adapters) and never the teacher; then the
properties of the channel-matching method itself (no added parameter, the assignment's shapes, rematching
leaves the networks as they were) and of the shared loop."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.compression.base import Batch, DistillContext
from pipeline.params.compression import CohortParams, DistillParams
from pipeline.compression.registry import MODULES, all_methods
from pipeline.names import ONLINE_METHODS, SUPERVISED
from pipeline.compression.teachers import Teacher
from pipeline.compression.trainer import fit
from pipeline.data import TaskData
from pipeline.models import classifier, cohort
from pipeline.models.classifier import image_input
from pipeline.models.student import StudentConfig

K, N, SIZE = 4, 16, 32
COHORT = ["mobilenetv2_050", "shufflenet_v2_x0_5", "mobilenetv2_050"]
TOKEN_STUDENT = {"patch_size": 8, "d_model": 16, "n_layers": 1, "n_heads": 2, "d_ff": 32}


def _task() -> TaskData:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)  # noqa: E731
    labels = torch.arange(N) % K
    return TaskData("micro", [f"c{k}" for k in range(K)], ["a {}."], images(N), labels, images(K), torch.arange(K))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_cnn():
    torch.manual_seed(0)
    return classifier.build_cnn("resnet18", K).eval().requires_grad_(False)


def _teacher(module) -> Teacher:
    return Teacher("cnn resnet18", lambda images: module(image_input(images)), 0, module=module)


def _params(method: str, student: str, **extra) -> DistillParams:
    token = {"student": {**DistillParams().token.student.model_dump(), **TOKEN_STUDENT}, "l2l_every": 1,
             "l2l_unseen_classes": 1}
    return DistillParams.model_validate({"method": method if method != SUPERVISED else "kd", "student": student,
                                         "batch_size": 8, "epochs": 1, "warmup_steps": 1, "token": token, **extra})


def _context(name: str, teacher_cnn, student: str = "mobilenetv2_050", task: TaskData | None = None,
             **extra) -> DistillContext:
    """`name` on a fresh student (or cohort) of `task`'s classes (default: the micro task above)."""
    torch.manual_seed(0)
    task = task or _task()
    k, size = len(task.classes), task.train_images.shape[-1]
    if name in ONLINE_METHODS:  # a cohort of three (not only pairs), mixed, without a teacher
        cp = CohortParams.model_validate({"method": name, "networks": COHORT, "batch_size": 8, "epochs": 1,
                                          "warmup_steps": 1, "embed_dim": 16, **extra})
        model = cohort.build(COHORT, k, embed_dim=16)
        return DistillContext(model, task, cp, torch.device("cpu"), None, eval_batch_size=8)
    if name == "token":
        dp = _params("token", "token")
        model = classifier.build_student(StudentConfig(image_size=size, num_classes=k, **TOKEN_STUDENT,
                                                       ft_layers=True, leff=True))
    else:
        dp = _params(name, student, **extra)
        model = classifier.build_cnn(student, k)
    teacher = None if name == SUPERVISED else _teacher(teacher_cnn)
    return DistillContext(model, task, dp, torch.device("cpu"), teacher, eval_batch_size=8)


def _batch(ctx: DistillContext, idx: torch.Tensor | None = None) -> Batch:
    idx = torch.arange(8) if idx is None else idx
    return Batch(image_input(ctx.task.train_images[idx]), ctx.task.train_labels[idx], idx, torch.zeros(8, dtype=torch.bool))


def test_the_registry_lists_every_method_and_the_supervised_training():
    assert set(all_methods()) == {*MODULES, SUPERVISED}
    assert {"token", "kd", "fitnet", "channel_matching", "dml", "mcl"} <= set(MODULES)


def one_step(ctx: DistillContext, name: str, teacher_cnn, idx: torch.Tensor | None = None) -> None:
    """One step of method `name` on `ctx` (the batch of training images `idx`, default the first 8): every term
    finite, the gradient reaches the student (and the method's added parameters) and never the teacher."""
    method = all_methods()[name](ctx)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.0)
    method.start(optimizer, 1)
    method.on_epoch(0)
    terms = method.terms(_batch(ctx, idx))
    assert set(terms) <= set(method.weights())
    for key, value in terms.items():
        assert value.ndim == 0 and torch.isfinite(value), key
    total = sum(method.weights()[k] * v for k, v in terms.items())
    total.backward()
    grads = [p.grad for p in method.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if method.added_parameters():
        assert all(p.grad is not None for p in method.added.parameters())
    assert all(p.grad is None for p in teacher_cnn.parameters())


@pytest.mark.parametrize("name", sorted({*MODULES, SUPERVISED}))
def test_one_step_trains_the_student_and_never_the_teacher(name, teacher_cnn):
    one_step(_context(name, teacher_cnn), name, teacher_cnn)


@pytest.mark.parametrize("name", sorted({*MODULES, SUPERVISED}))
def test_the_shared_loop_runs_each_method(name, teacher_cnn):
    ctx = _context(name, teacher_cnn)
    method = all_methods()[name](ctx)
    before = {k: v.clone() for k, v in teacher_cnn.state_dict().items()}
    logged = fit(method, desc=name)
    assert logged["step_seconds"] > 0 and all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    assert not ctx.student.training
    after = teacher_cnn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included


@pytest.mark.parametrize("student", ["mobilenetv2_050", "shufflenet_v2_x0_5"])
@pytest.mark.parametrize("rule", ["sparse", "random", "maxpool"])
def test_channel_matching_adds_no_parameter_and_gives_each_student_channel_its_teacher_channels(rule, student, teacher_cnn):
    ctx = _context("channel_matching", teacher_cnn, student, matching={"rule": rule})
    method = all_methods()["channel_matching"](ctx)
    assert method.added_parameters() == 0
    assert [id(p) for p in method.parameters()] == [id(p) for p in ctx.student.parameters()]
    method.on_epoch(0)
    for (n, m), assignment in zip(method.sites.channels, method.assignments):
        if rule == "sparse":
            assert assignment.shape == (n,)
        else:
            assert assignment.shape == (n, m // n)
        assert assignment.unique().numel() == assignment.numel()  # distinct teacher channels
        assert int(assignment.max()) < m


def test_rematching_moves_no_batchnorm_statistic_and_keeps_train_mode(teacher_cnn):
    ctx = _context("channel_matching", teacher_cnn, matching={"rematch_images": 8})
    method = all_methods()["channel_matching"](ctx)
    ctx.student.train()
    before = {k: v.clone() for k, v in ctx.student.state_dict().items()}
    method.on_epoch(0)
    assert ctx.student.training and all(m.training for m in ctx.student.modules())
    after = ctx.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_rematching_follows_rematch_every(teacher_cnn):
    ctx = _context("channel_matching", teacher_cnn, matching={"rematch_every": 2})
    method = all_methods()["channel_matching"](ctx)
    for epoch in range(5):
        method.on_epoch(epoch)
    assert method.matchings == 3  # epochs 0, 2, 4


def test_fitnet_adds_one_1x1_adapter_per_site_pair(teacher_cnn):
    ctx = _context("fitnet", teacher_cnn)
    method = all_methods()["fitnet"](ctx)
    expected = sum(n * m + 2 * m for n, m in method.sites.channels)  # 1x1 conv without bias, BatchNorm's gain and bias
    assert method.added_parameters() == expected > 0
    assert len(method.parameters()) == len(list(ctx.student.parameters())) + len(list(method.added.parameters()))


def test_cached_teacher_maps_equal_recomputed_ones(teacher_cnn):
    """The feature methods read the teacher's maps from a cache of every training image in both views: for a
    batch of mixed flips they are the maps a teacher forward of the batch gives."""
    from pipeline.compression import data as D

    method = all_methods()["fitnet"](_context("fitnet", teacher_cnn))
    idx, flips = torch.tensor([5, 0, 11, 3]), torch.tensor([True, False, False, True])
    images = D.apply_flips(image_input(method.ctx.task.train_images[idx]), flips)
    cached = method.sites.teacher_maps_of(Batch(images, method.ctx.task.train_labels[idx], idx, flips))
    recomputed = method.sites.teacher_maps(images)
    assert [c.shape for c in cached] == [r.shape for r in recomputed] and len(cached) >= 2
    for c, r in zip(cached, recomputed):
        torch.testing.assert_close(c, r, rtol=1e-5, atol=1e-5)  # batch composition may move the last bits


def test_feature_methods_refuse_a_teacher_without_feature_maps(teacher_cnn):
    from pipeline.errors import InputError

    ctx = _context("fitnet", teacher_cnn)
    ctx = dataclasses.replace(ctx, teacher=Teacher("zero-shot", ctx.teacher.logits, 0))
    with pytest.raises(InputError, match="distill.teacher"):
        all_methods()["fitnet"](ctx)


def test_a_site_name_that_does_not_exist_is_one_clear_error(teacher_cnn):
    from pipeline.errors import InputError

    with pytest.raises(InputError, match="distill.feature.sites: unknown student site 'nope'"):
        all_methods()["fitnet"](_context("fitnet", teacher_cnn, feature={"sites": [["layer2.1", "nope"]]}))


def test_default_sites_leave_out_a_student_site_wider_than_the_teachers(teacher_cnn):
    """A MobileNetV3 with a CIFAR stem ends in a 576-channel conv at 2x2, where resnet18 has 256 channels:
    both feature methods leave that pair out by default (the same sites); named, channel matching refuses it."""
    from pipeline.errors import InputError

    ctx = _context("fitnet", teacher_cnn)
    torch.manual_seed(0)
    ctx = dataclasses.replace(ctx, student=classifier.build_cnn("tf_mobilenetv3_small_minimal_100", K, stem_stride=1))
    for name in ("fitnet", "channel_matching"):
        method = all_methods()[name](ctx)
        assert method.sites.channels and all(n <= m for n, m in method.sites.channels)
        assert ["layer3.1", "blocks.5.0"] not in method.sites.names()
    ctx = dataclasses.replace(ctx, params=_params("channel_matching", "tf_mobilenetv3_small_minimal_100",
                                                  feature={"sites": [["layer3.1", "blocks.5.0"]]}))
    assert all_methods()["fitnet"](ctx).sites.channels == [(576, 256)]  # an adapter maps any width
    with pytest.raises(InputError, match=r"pair \(layer3.1, blocks.5.0\): the student site has 576 channels"):
        all_methods()["channel_matching"](ctx)
