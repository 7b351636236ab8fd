"""A continual method's inputs (pipeline/continual/inputs.py) are values: built in memory they train a method
with no file anywhere; the stage's assembler (pipeline/continual/assemble.py) builds only what a method reads;
the compression branch's context is the same kind of thing (pipeline/training.py, `Inputs`)."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from pipeline import training
from pipeline.compression.base import DistillContext
from pipeline.continual import all_methods, get_method
from pipeline.continual import trainer as continual_trainer
from pipeline.continual.assemble import ORDER, assemble
from pipeline.continual.base_head import BaseHead
from pipeline.continual.inputs import INPUTS, NotAssembled, TaskInputs, TaskRecipe, TeacherFeatures
from pipeline.continual.prototypes import initial_prototypes
from pipeline.continual.teacher_cache import TeacherRows
from pipeline.data.reference import ReferenceSet
from pipeline.models import clip as clip_lib
from pipeline.params import EvalParams, LossParams, Params, TrainParams
from pipeline.tools.bench_synthetic import synthetic_task

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world():
    """Two synthetic tasks (a = 'aircraft', then b = 'shapes': names of the default benchmark, which params
    check), a random tiny CLIP standing for E0 and E_a, and every optional input of b computed from it, in
    memory."""
    generator = torch.Generator().manual_seed(0)
    a = synthetic_task("aircraft", 3, 8, 32, ["a {}."], generator)
    b = synthetic_task("shapes", 4, 8, 32, ["a photo of {}.", "{}"], generator)
    torch.manual_seed(0)
    model = clip_lib.build("synth-vit-tiny", 32)
    teacher = clip_lib.freeze(copy.deepcopy(model))
    with torch.no_grad():
        image = clip_lib.encode_images(teacher, b.train_images)
        text_a, text_b = (clip_lib.class_text_features(teacher, t.prompts()) for t in (a, b))
        image_a = clip_lib.encode_images(teacher, a.train_images)
    rows = TeacherRows(CPU, cached=image)
    features = TeacherFeatures(image=rows, text=text_b)
    values = {
        "e0_features": features, "prev_features": features,
        "prototypes": initial_prototypes(image, b.train_labels, 4),
        "seen_e0_text": torch.cat([text_a, text_b]), "seen_prev_text": torch.cat([text_a, text_b]),
        "prev_state": {}, "earlier_prototypes": {"aircraft": initial_prototypes(image_a, a.train_labels, 3)},
        "base_head": BaseHead((a,), False, text_a, rows), "prev_teacher": teacher, "e0_teacher": teacher,
        "reference": ReferenceSet(images=a.train_images, captions=["a caption", "another caption"]),
    }
    assert set(values) == INPUTS  # every input has a value here
    return a, b, model, values


def _recipe(**loss) -> TaskRecipe:
    return TaskRecipe(loss=LossParams(zscl_ref_batch=4, **loss), train=TrainParams(steps=1, batch_size=4, warmup_steps=1),
                      eval=EvalParams(batch_size=8))


def _inputs(world, method: str, **given) -> TaskInputs:
    a, b, model, values = world
    recipe = _recipe()
    reads = get_method(method).reads(recipe.loss, first=False)
    return TaskInputs(name="shapes", prev_name="aircraft", task=b, base_tasks=(a,), student=copy.deepcopy(model), params=recipe,
                      device=CPU, **({k: values[k] for k in reads} | given))


@pytest.mark.parametrize("name", sorted(all_methods()))
def test_a_method_steps_from_inputs_built_in_memory_with_no_file(name, world, tmp_path, monkeypatch):
    """In an empty folder (any read of a stage's output would fail there: every path is relative), each method
    is built from values and trains one step through the one trainer; the folder stays empty."""
    monkeypatch.chdir(tmp_path)
    inputs = _inputs(world, name)
    assert inputs.assembled == get_method(name).reads(inputs.params.loss, first=False)
    method = get_method(name)(inputs)
    run = continual_trainer.prepare(method)
    before = {k: v.clone() for k, v in inputs.student.model.state_dict().items()}
    logged = run.step(0, next(iter(run.order)))
    assert set(logged) == set(method.weights()) | {"total"}
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values())
    assert any(not torch.equal(before[k], v) for k, v in inputs.student.model.state_dict().items())
    assert list(tmp_path.iterdir()) == []


def test_an_input_the_method_did_not_name_fails_at_its_first_use(world):
    inputs = _inputs(world, "finetune")
    assert isinstance(inputs.prev_features, NotAssembled) and inputs.assembled == frozenset()
    with pytest.raises(AttributeError, match=r"TaskInputs.prev_features was not assembled: the method's reads\(\) must name it"):
        inputs.prev_features.image  # noqa: B018  (a read, not a `None`: the method cannot mistake it for the first task)
    with pytest.raises(AttributeError, match="TaskInputs.prototypes was not assembled"):
        inputs.prototypes.clone()
    with pytest.raises(ValueError, match=r"dual_teacher: its inputs lack \['e0_features', 'earlier_prototypes'"):
        get_method("dual_teacher")(inputs)


def test_inputs_are_frozen_and_so_is_the_compression_context(world):
    """One context type for both branches: frozen dataclasses deriving from training.Inputs, whose autocast
    they share."""
    inputs = _inputs(world, "finetune")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inputs.student = None
    a = world[0]
    ctx = DistillContext(torch.nn.Linear(2, 2), a, None, CPU, generator=torch.Generator())
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.teacher = None
    for value in (inputs, ctx):
        assert isinstance(value, training.Inputs) and dataclasses.is_dataclass(value)
        assert type(value).autocast is training.Inputs.autocast


def test_reads_follow_the_loss_so_the_default_pays_for_nothing_more():
    """What each method names: E_{m-1}'s features only where L_dis uses them, the seen texts only with the seen
    scope; LwM's teacher not on a first task without KD; fine-tuning and WiSE-FT nothing."""
    dual = get_method("dual_teacher").reads
    base = {"prototypes", "prev_state", "earlier_prototypes", "e0_features"}
    assert dual(LossParams(dis_scope="current"), False) == base | {"prev_features"}
    assert dual(LossParams(dis_scope="seen"), False) == base | {"prev_features", "seen_prev_text", "seen_e0_text"}
    assert dual(LossParams(dis_scope="seen", dis_teachers="e0"), False) == base | {"seen_e0_text"}
    assert get_method("lwm").reads(LossParams(kd_first_task="none"), True) == frozenset()
    assert get_method("lwm").reads(LossParams(), True) == {"prev_teacher"}
    assert get_method("zscl").reads(LossParams(), True) == {"e0_teacher", "reference"}
    for name in ("finetune", "wise_ft"):
        assert get_method(name).reads(LossParams(), False) == frozenset()
    for name, method in all_methods().items():
        assert method.reads(LossParams(), False) <= INPUTS, name


class _NoSource:
    """A source of stage outputs that must not be touched."""

    def __getattr__(self, name):
        raise AssertionError(f"read {name} for a method that reads nothing")


def test_the_assembler_reads_nothing_a_method_does_not_name(world, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    a, b, model, _ = world
    params = Params.model_validate({"tasks": {"aircraft": {"prev": "e0"}, "shapes": {"prev": "aircraft"}}})
    tasks = {"aircraft": a, "shapes": b}
    inputs = assemble(params, "shapes", tasks, model, CPU, frozenset(), source=_NoSource())
    assert inputs.assembled == frozenset() and inputs.base_tasks == (a,) and inputs.prev_name == "aircraft"
    assert inputs.params.loss is params.loss and inputs.precision == params.runtime.precision
    with pytest.raises(KeyError, match="no such continual input"):
        assemble(params, "shapes", tasks, model, CPU, {"nonsense"}, source=_NoSource())
    assert set(ORDER) == INPUTS and len(ORDER) == len(INPUTS)
