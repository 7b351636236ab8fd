"""Continual methods on a micro task: what each step computes, trains and leaves alone."""
from __future__ import annotations

import copy

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import REPO

from pipeline import io, paths
from pipeline.params import Params
from pipeline.continual import all_methods, dual_teacher, get_method
from pipeline.continual.assemble import StageOutputs, assemble
from pipeline.continual.inputs import TaskInputs
from pipeline.continual.prototypes import update_prototypes
from pipeline.continual.teacher_cache import load_array
from pipeline.continual.trainer import train_task
from pipeline.losses.dual_teacher import similarity_distillation
from pipeline.data import save_task
from pipeline.data.facets import build_facet_task
from pipeline.models import clip as clip_lib
from pipeline.stages import prototypes as prototypes_stage
from pipeline.training import Batch

TASKS = {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}}


def make_workspace(root, tasks: dict) -> Params:
    """In the current folder `root`: micro params with `tasks`, the prepared tasks, a random E0 and its
    prototypes (the prototypes stage)."""
    raw = yaml.safe_load(open(REPO / "params.yaml"))
    raw["tasks"] = tasks
    raw["data"]["benchmark"] = "facets"
    raw["data"]["root"] = str(REPO / "images")  # must exist (a DVC dependency); read by the folder benchmark only
    raw["train"].update(steps=2, batch_size=8, warmup_steps=2)
    raw["eval"]["batch_size"] = 32
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    for name in tasks:
        save_task(build_facet_task(name, image_size=32, train_per_class=3, test_per_class=2, seed=0), paths.task_dir(name))
    torch.manual_seed(0)
    clip_lib.save(clip_lib.build("synth-vit-tiny", 32), paths.model_dir("e0"), {"name": "e0"})
    prototypes_stage.main([])
    return Params.load()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with micro params, two prepared tasks, a random E0, its prototypes, and a trained 'shape'."""
    root = tmp_path_factory.mktemp("methods")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = make_workspace(root, TASKS)
        ctx = make_context(params, "shape", "finetune")
        train_task(get_method("finetune")(ctx))
        clip_lib.save(ctx.student, paths.model_dir("shape"), {"name": "shape"})
        yield root, params


def make_context(params: Params, name: str, method: str | None = None,
                 tasks: dict | None = None) -> TaskInputs:
    """Task `name`'s inputs as the train stage assembles them: those `method` reads (`train.method` by
    default); the student is the previous model; earlier tasks not in `tasks` are read from data/tasks."""
    from pipeline.data import load_task

    student = clip_lib.load(paths.model_dir(params.tasks[name].prev))
    first = params.tasks[name].prev == "e0"
    reads = get_method(method or params.train.method).reads(params.loss, first)
    return assemble(params, name, {**(tasks or {}), name: load_task(paths.task_dir(name))}, student,
                    torch.device("cpu"), reads)


def load_teacher(name: str) -> clip_lib.Clip:
    """Model `name` as a frozen teacher (what the stage gives a method)."""
    return clip_lib.freeze(clip_lib.load(paths.model_dir(name)))


def with_loss(params: Params, **changes) -> Params:
    raw = params.model_dump(mode="json")
    raw["loss"].update(changes)
    return Params.from_dict(raw)


def first_batch(ctx: TaskInputs, n: int = 8):
    idx = torch.arange(n)
    return ctx.task.train_images[idx], ctx.task.train_labels[idx], idx


def test_registry_lists_exactly_the_registered_methods():
    from pipeline.continual.registry import MODULES
    from pipeline.names import CORPUS_METHODS

    methods = all_methods()
    assert set(methods) == set(MODULES) and {"finetune", "dual_teacher"} <= set(methods)
    assert all(cls.name == name and cls.__module__ == f"pipeline.continual.{MODULES[name]}" for name, cls in methods.items())
    assert CORPUS_METHODS <= set(MODULES)
    with pytest.raises(ValueError, match="unknown method 'nope'; known: dual_teacher, finetune"):
        get_method("nope")


def test_registering_an_unlisted_or_second_method_is_refused():
    from pipeline.continual.registry import register_method

    with pytest.raises(ValueError, match="not listed"):
        register_method(type("Nope", (), {"name": "nope"}))
    with pytest.raises(ValueError, match="registered twice"):
        register_method(type("Again", (), {"name": "finetune"}))


def test_finetune_has_only_ce_and_trains_all_but_logit_scale(workspace, monkeypatch):
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(params, "colour")
    method = get_method("finetune")(ctx)
    assert set(method.terms(Batch(*first_batch(ctx)))) == {"ce"}
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
    terms = method.terms(Batch(*first_batch(ctx)))
    assert set(terms) == {"ce", "con", "dis"}
    assert terms["dis"].item() == pytest.approx(0.0, abs=1e-4)
    sum(terms.values()).backward()
    grads = [p.grad for p in ctx.student.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def second_task_dual_teacher(workspace, monkeypatch, **loss):
    """A dual-teacher method on the workspace's second task ('colour', after 'shape'), with loss changes."""
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, **loss), "colour")
    return ctx, get_method("dual_teacher")(ctx)


@pytest.mark.parametrize("weighting", ["mean", "adaptive"])
def test_dual_teacher_second_task_teaches_only_the_student(workspace, monkeypatch, weighting):
    ctx, method = second_task_dual_teacher(workspace, monkeypatch, teacher_weighting=weighting)
    params = ctx.params
    prev, e0 = ctx.prev_features, ctx.e0_features
    every = torch.arange(len(ctx.task.train_labels))

    def teachers():
        return {"prev_i": prev.image(None, every), "prev_t": prev.text, "e0_i": e0.image(None, every), "e0_t": e0.text}

    assert prev is not None and not torch.equal(teachers()["prev_i"], teachers()["e0_i"])  # E_{m-1} (trained on shape) differs from E0
    snapshot = {k: v.clone() for k, v in teachers().items()}
    initial = method.prototypes.clone()

    images, labels, idx = first_batch(ctx)
    terms = method.terms(Batch(images, labels, idx))
    assert terms["dis"].item() > 0  # the student (= E_{m-1}) disagrees with E0
    sum(method.weights()[k] * v for k, v in terms.items()).backward()
    assert not method.prototypes.requires_grad and method.prototypes.grad is None
    assert all(t.grad is None and not t.requires_grad for t in teachers().values())

    # The sliding update uses the student's detached batch features, per the formula.
    with torch.no_grad():
        v = clip_lib.encode_images(ctx.student, images)
    method.after_step()
    expected = update_prototypes(initial, v, labels, params.loss.gamma)
    torch.testing.assert_close(method.prototypes, expected)
    absent = sorted(set(range(len(ctx.task.classes))) - set(labels.tolist()))
    for c in absent:
        assert torch.equal(method.prototypes[c], initial[c])
    for key, value in teachers().items():
        assert torch.equal(value, snapshot[key]), key


@pytest.mark.parametrize("teachers", ["e0", "prev"])
def test_single_teacher_ablation_distils_from_that_teacher_alone(workspace, monkeypatch, teachers):
    # the patent's scope, whose rows are this task's only (the seen scope's rows are tested below)
    ctx, method = second_task_dual_teacher(workspace, monkeypatch, dis_teachers=teachers, dis_scope="current")
    images, labels, idx = first_batch(ctx)
    dis = method.terms(Batch(images, labels, idx))["dis"]
    teacher = ctx.e0_features if teachers == "e0" else ctx.prev_features
    # the reference computation: the student's image features and this task's class text features, with gradient
    v = clip_lib.encode_images(ctx.student, images)
    u = clip_lib.tasks_class_text_features(ctx.student, [ctx.task.prompts()])
    expected = similarity_distillation(torch.cat([v, u]), torch.cat([teacher.image(images, idx), teacher.text]), method.prototypes)
    torch.testing.assert_close(dis, expected)
    both = second_task_dual_teacher(workspace, monkeypatch, dis_scope="current")[1].terms(Batch(images, labels, idx))["dis"]
    assert not torch.allclose(dis, both)  # the two teachers disagree: dropping one changes the loss


def test_dis_weight_zero_removes_distillation_from_the_update(workspace, monkeypatch):
    """With con_weight = dis_weight = 0 a dual-teacher step is a fine-tuning step (same batches, same seed).
    In the patent's scope: the seen scope computes this task's text features in one forward with the earlier
    tasks' prompts, the same values up to float rounding, which Adam's normalisation amplifies."""
    root, params = workspace
    monkeypatch.chdir(root)
    states = {}
    plain = with_loss(params, con_weight=0.0, dis_weight=0.0, dis_scope="current")
    for name, p in (("finetune", params), ("dual_teacher", plain)):
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
    features = load_array(paths.prototypes_features("shape"))
    assert isinstance(features, np.memmap) and features.dtype == np.float32
    assert set(saved) == {"prototypes", "text_features"} and saved["prototypes"].shape == (6, features.shape[1])
    torch.testing.assert_close(saved["prototypes"].norm(dim=1), torch.ones(6))


def test_cached_teacher_features_equal_recomputed_ones(workspace, monkeypatch):
    """E0's rows (prototypes stage) and E_{m-1}'s (the disk cache, keyed by its producer) are the teachers'
    features of the batch, bit for bit; a second context reads E_{m-1}'s back instead of recomputing them."""
    root, params = workspace
    monkeypatch.chdir(root)
    ctx = make_context(params, "colour")
    images, _, idx = first_batch(ctx)
    for name, rows in (("e0", ctx.e0_features.image), ("shape", ctx.prev_features.image)):
        assert isinstance(rows.cached, np.memmap)
        with torch.no_grad():
            recomputed = clip_lib.encode_images(load_teacher(name), images)
        assert torch.equal(rows(images, idx), recomputed), name
    cache = sorted(paths.FEATURE_CACHE.glob("*.npy"))
    assert len(cache) == 1
    stamp = cache[0].stat().st_mtime_ns
    again = make_context(params, "colour").prev_features.image
    assert Path(again.cached.filename).resolve() == cache[0].resolve() and cache[0].stat().st_mtime_ns == stamp
    # Another producer (E0 in E_{m-1}'s place) gets its own file.
    StageOutputs().teacher_image_features("e0", make_context(params, "colour"), lambda: torch.zeros(1, 1))
    assert len(list(paths.FEATURE_CACHE.glob("*.npy"))) == 2


def test_augmented_training_runs_the_teachers_on_the_batch(workspace, monkeypatch):
    root, params = workspace
    monkeypatch.chdir(root)
    raw = params.model_dump(mode="json")
    raw["train"]["augment"] = True
    ctx = make_context(Params.from_dict(raw), "colour")
    images, _, idx = first_batch(ctx)
    shifted = images.roll(1, dims=-1)  # what an augmentation would hand the step: not the cached image
    for name, rows in (("e0", ctx.e0_features.image), ("shape", ctx.prev_features.image)):
        assert rows.cached is None
        with torch.no_grad():
            expected = clip_lib.encode_images(load_teacher(name), shifted)
        assert torch.equal(rows(shifted, idx), expected), name


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


# ---------------------------------------------------------------- loss.dis_scope: seen (L_dis over tasks 1..m)
CHAIN = {"shape": {"prev": "e0"}, "colour": {"prev": "shape"}, "fill": {"prev": "colour"}}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Three tasks trained one after another by the train stage with the default dual-teacher params but
    the patent's dis_scope "current", so each leaves its method_state.safetensors for the next (carried
    whatever the scope)."""
    from pipeline.stages import train as train_stage

    root = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = with_loss(make_workspace(root, CHAIN), dis_scope="current")
        (root / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json")))
        assert params.train.method == "dual_teacher" and Params.load().loss.dis_scope == "current"
        for name in CHAIN:
            train_stage.main([name])
        yield root, params


def state_of(task: str) -> dict[str, torch.Tensor]:
    return io.load_tensors(paths.method_state(task))


def test_tasks_class_text_features_is_one_forward_of_per_task_ensembles(workspace, monkeypatch):
    """Tasks may differ in their number of templates; every prompt goes through the text tower at once."""
    root, _ = workspace
    monkeypatch.chdir(root)
    clip = clip_lib.load(paths.model_dir("e0"))
    prompts = [[["a {} one", "the {}"] for _ in range(3)], [["{}.", "a {}.", "one {}."] for _ in range(2)]]
    prompts = [[[t.replace("{}", f"c{k}{c}") for t in p] for c, p in enumerate(task)] for k, task in enumerate(prompts)]
    calls = []
    encode = clip_lib.encode_texts
    monkeypatch.setattr(clip_lib, "encode_texts", lambda clip, texts: calls.append(len(texts)) or encode(clip, texts))
    with torch.no_grad():
        got = clip_lib.tasks_class_text_features(clip, prompts)
        assert calls == [12]
        expected = torch.cat([clip_lib.class_text_features(clip, p) for p in prompts])
    assert got.shape == (5, expected.shape[1])
    torch.testing.assert_close(got, expected)


def test_seen_scope_on_the_first_task_equals_current(workspace, monkeypatch):
    """Task 1 has no earlier task, so the seen scope's rows and columns are the current ones: same terms."""
    root, params = workspace
    monkeypatch.chdir(root)
    batch = first_batch(make_context(params, "shape"))
    current = get_method("dual_teacher")(make_context(with_loss(params, dis_scope="current"), "shape")).terms(Batch(*batch))
    seen = get_method("dual_teacher")(make_context(with_loss(params, dis_scope="seen"), "shape")).terms(Batch(*batch))
    for key in ("ce", "con", "dis"):
        assert torch.equal(current[key], seen[key]), key


@pytest.mark.parametrize("weighting", ["mean", "adaptive"])
def test_seen_scope_rows_and_columns(chain, monkeypatch, weighting):
    """Task 3 of shape -> colour -> fill (6, 7, 4 classes), batch B = 8: S is (B + 17) x 17, with rows
    H = [V; U_shape; U_colour; U_fill] and columns P_all = [P_shape, P_colour as they ended; P_fill live].
    E0's rows are its cached image features and its class texts of the prototypes stage; E_colour's are its
    image features and its class texts of the three tasks. L_ce and L_con stay on the current task."""
    root, params = chain
    monkeypatch.chdir(root)
    reads = []
    load = clip_lib.load
    monkeypatch.setattr(clip_lib, "load", lambda directory: reads.append(Path(directory).name) or load(directory))
    ctx = make_context(with_loss(params, dis_scope="seen", teacher_weighting=weighting), "fill")
    method = get_method("dual_teacher")(ctx)
    seen = {}  # the arguments the losses are called with
    monkeypatch.setattr(dual_teacher, "dual_teacher_distillation", lambda *args: seen.setdefault("args", args) and 0.0)
    monkeypatch.setattr(dual_teacher, "prototype_contrastive", lambda v, y, u, p, tau: seen.setdefault("con", (u, p)) and 0.0)
    images, labels, idx = first_batch(ctx)
    method.terms(Batch(images, labels, idx))
    method.terms(Batch(images, labels, idx))
    # The student, then E_{m-1}: one read of its checkpoint for the task (its image rows, its class texts of
    # this task and of the seen ones), none per step; E0 none (its features come from the prototypes stage).
    assert reads == ["colour", "colour"]
    monkeypatch.setattr(clip_lib, "load", load)
    rows, prototypes, e0_rows, prev_rows, w, k, b = seen["args"]
    assert w == weighting and (k, b) == (params.loss.adaptive_k, params.loss.adaptive_b)

    assert [t.name for t in ctx.seen_tasks] == list(CHAIN)
    d = prototypes.shape[1]
    assert rows.shape == e0_rows.shape == prev_rows.shape == (8 + 6 + 7 + 4, d) and prototypes.shape == (17, d)
    colour = state_of("colour")  # carries shape's final prototypes and holds its own
    assert torch.equal(prototypes, torch.cat([colour["prototypes/shape"], colour["prototypes"], method.prototypes]))
    with torch.no_grad():
        v = clip_lib.encode_images(ctx.student, images)
        u = [clip_lib.class_text_features(ctx.student, t.prompts()) for t in ctx.seen_tasks]
        teacher = load_teacher("colour")
        prev_u = [clip_lib.class_text_features(teacher, t.prompts()) for t in ctx.seen_tasks]
    torch.testing.assert_close(rows, torch.cat([v, *u]))
    stage = {n: io.load_tensors(paths.prototypes_file(n)) for n in CHAIN}
    e0_text = [stage[n]["text_features"] for n in CHAIN]
    e0_image = torch.from_numpy(load_array(paths.prototypes_features("fill"))[idx.numpy()])
    assert torch.equal(e0_rows, torch.cat([e0_image, *e0_text]))
    torch.testing.assert_close(prev_rows, torch.cat([ctx.prev_features.image(images, idx), *prev_u]))
    con_u, con_p = seen["con"]
    assert con_u.shape == (4, d) and con_p is method.prototypes  # L_con: this task's classes only
    torch.testing.assert_close(con_u, u[2])


def test_seen_sample_bounds_the_rows_to_k_earlier_classes_and_this_tasks(chain, monkeypatch):
    """loss.dis_seen_sample = 5 on task 3 (13 earlier classes, 4 of its own): U holds 5 earlier classes drawn
    anew each step and all 4 of fill's, the teachers' text rows are the same classes' rows, P_all stays whole;
    the text tower sees those 9 classes' prompts only. K >= 13 is the seen scope itself."""
    root, params = chain
    monkeypatch.chdir(root)
    ctx = make_context(with_loss(params, dis_scope="seen", dis_seen_sample=5), "fill")
    method = get_method("dual_teacher")(ctx)
    seen = []
    monkeypatch.setattr(dual_teacher, "dual_teacher_distillation", lambda *args: seen.append(args) or 0.0)
    texts = []
    encode = clip_lib.encode_texts
    monkeypatch.setattr(clip_lib, "encode_texts", lambda clip, t: texts.append(len(t)) or encode(clip, t))
    images, labels, idx = first_batch(ctx)
    picks = []
    sampled = method.sampled_seen
    monkeypatch.setattr(method, "sampled_seen", lambda: picks.append(sampled()) or picks[-1])
    method.terms(Batch(images, labels, idx))
    method.terms(Batch(images, labels, idx))
    (prompts, rows), (_, rows_again) = picks
    assert rows.tolist()[-4:] == list(range(13, 17)) and len(rows) == 9 and len(set(rows[:5].tolist())) == 5
    assert not torch.equal(rows, rows_again)  # drawn anew each step
    templates = {t.name: len(t.templates) for t in ctx.seen_tasks}
    assert texts[0] == sum(len(p) for task in prompts for p in task) < sum(len(t.classes) * templates[t.name] for t in ctx.seen_tasks)
    student_rows, prototypes, e0_rows, prev_rows, *_ = seen[0]
    d = prototypes.shape[1]
    assert student_rows.shape == e0_rows.shape == prev_rows.shape == (8 + 9, d) and prototypes.shape == (17, d)
    assert torch.equal(e0_rows[8:], ctx.seen_e0_text[rows]) and torch.equal(prev_rows[8:], ctx.seen_prev_text[rows])
    with torch.no_grad():
        all_u = torch.cat([clip_lib.class_text_features(ctx.student, t.prompts()) for t in ctx.seen_tasks])
    torch.testing.assert_close(student_rows[8:].detach(), all_u[rows])
    unbounded = get_method("dual_teacher")(make_context(with_loss(params, dis_scope="seen", dis_seen_sample=13), "fill"))
    assert unbounded.seen_sample is None  # no fewer than the earlier classes: every one, as without the key


def test_state_carries_the_final_prototypes_along_the_chain(chain, monkeypatch):
    """Each task saves its own final P_m as `prototypes` and hands on every earlier one unchanged as
    `prototypes/<task>`, with dis_scope "current" too (the chain was trained with it)."""
    root, _ = chain
    monkeypatch.chdir(root)
    shape, colour, fill = (state_of(n) for n in CHAIN)
    assert set(shape) == {"prototypes"}
    assert set(colour) == {"prototypes", "prototypes/shape"}
    assert set(fill) == {"prototypes", "prototypes/shape", "prototypes/colour"}
    assert torch.equal(colour["prototypes/shape"], shape["prototypes"])
    assert torch.equal(fill["prototypes/shape"], shape["prototypes"])
    assert torch.equal(fill["prototypes/colour"], colour["prototypes"])
    for name, state in zip(CHAIN, (shape, colour, fill)):
        initial = io.load_tensors(paths.prototypes_file(name))["prototypes"]
        assert state["prototypes"].shape == initial.shape
        assert not torch.equal(state["prototypes"], initial)  # the sliding update moved them during the task


def test_method_state_is_the_live_and_the_carried_prototypes(chain, monkeypatch):
    root, params = chain
    monkeypatch.chdir(root)
    method = get_method("dual_teacher")(make_context(params, "fill"))
    train_task(method)
    state = method.state()
    assert state["prototypes"] is method.prototypes
    assert torch.equal(state["prototypes/colour"], state_of("colour")["prototypes"])


def test_carried_prototypes_fall_back_to_e0_initial_ones(chain, workspace, monkeypatch, tmp_path):
    """No state file (the previous task trained by finetune), or a key missing: E0's initial prototypes of
    that task (prototypes stage) stand in, saved on as they are; with the seen scope a warning names them."""
    root, params = workspace
    monkeypatch.chdir(root)
    assert not paths.method_state("shape").exists()
    method = get_method("dual_teacher")(make_context(params, "colour"))
    initial_shape = io.load_tensors(paths.prototypes_file("shape"))["prototypes"]
    assert list(method.earlier_prototypes) == ["shape"]
    assert torch.equal(method.earlier_prototypes["shape"], initial_shape)
    assert torch.equal(method.state()["prototypes/shape"], initial_shape)

    root, params = chain
    monkeypatch.chdir(root)
    partial = tmp_path / "method_state.safetensors"  # colour's state without the carried shape prototypes
    io.save_tensors(partial, {"prototypes": state_of("colour")["prototypes"]})
    monkeypatch.setattr(paths, "method_state", lambda name: partial)
    with pytest.warns(UserWarning, match="no final prototypes of shape"):
        method = get_method("dual_teacher")(make_context(with_loss(params, dis_scope="seen"), "fill"))
    assert list(method.earlier_prototypes) == ["shape", "colour"]
    assert torch.equal(method.earlier_prototypes["shape"], io.load_tensors(paths.prototypes_file("shape"))["prototypes"])
    assert torch.equal(method.earlier_prototypes["colour"], state_of("colour")["prototypes"])


def test_a_task_folder_holds_exactly_what_its_stage_wrote(chain, monkeypatch):
    """Retraining a task replaces models/<task> whole: a stray file goes, and a method without state
    (finetune after dual_teacher) leaves no method_state.safetensors behind. (Last: it retrains 'fill'.)"""
    from pipeline.stages import train as train_stage

    root, params = chain
    monkeypatch.chdir(root)
    folder = paths.model_dir("fill")
    assert paths.method_state("fill").is_file()
    (folder / "stray.txt").write_text("dropped here by hand")
    raw = params.model_dump(mode="json")
    raw["train"]["method"] = "finetune"
    (root / "finetune.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("PIPELINE_PARAMS", str(root / "finetune.yaml"))
    train_stage.main(["fill"])
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    assert sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(".")) == []  # no staging left


@pytest.mark.parametrize("name", ["dual_teacher", "lwf", "lwm"])
def test_augmented_training_is_repeatable(workspace, monkeypatch, name):
    """With `train.augment` every method that reads teachers per image trains (teachers on the batch), the
    same in every run for a seed, and not as it trains on the plain images."""
    root, params = workspace
    monkeypatch.chdir(root)
    raw = params.model_dump(mode="json")
    raw["train"]["method"] = name
    plain = Params.from_dict(raw)
    raw["train"]["augment"] = True
    augmented = Params.from_dict(raw)
    runs = [train_task(get_method(name)(make_context(p, "colour"))) for p in (augmented, augmented, plain)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
