"""The project's one training engine (pipeline/training.py): every training stage reaches the same `Trainer`,
only the engine builds the optimiser and runs the loop, and every registered method of both branches (and E0's
contrastive pretraining) runs one step through it."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import pipeline
from pipeline import training
from pipeline.compression import trainer as compression_trainer
from pipeline.params import PretrainParams
from pipeline.compression.registry import all_methods as compression_methods
from pipeline.continual import all_methods as continual_methods
from pipeline.continual import trainer as continual_trainer
from pipeline.data import CaptionCorpus
from pipeline.models import clip as clip_lib
from pipeline.training import Trainer
from tests.test_baselines import make_context, workspace  # noqa: F401  (module fixture: micro tasks, E0, 'shape')
from tests.test_compression_methods import _context, teacher_cnn  # noqa: F401  (a fixture)

ROOT = Path(pipeline.__file__).parent
# The stages that train a network, and the branch feeds of the one trainer they reach.
TRAINING_STAGES = {"pretrain", "train", "teacher", "distill", "student_alone", "cohort"}
FEEDS = {"pipeline.pretraining", "pipeline.continual.trainer", "pipeline.compression.trainer"}


def _module_file(name: str) -> Path | None:
    path = ROOT.parent / Path(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else (
        path / "__init__.py" if (path / "__init__.py").is_file() else None)


def _imports(name: str) -> set[str]:
    """The pipeline modules `name` imports, at its top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(_module_file(name).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline."))
    return {m for m in found if _module_file(m)}


def _reach(name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module))
    return seen


def test_every_training_stage_reaches_the_one_trainer_through_a_branch_feed():
    stages = {p.stem for p in (ROOT / "stages").glob("*.py") if p.stem not in ("__init__", "common")}
    reaching = {s for s in stages if "pipeline.training" in _reach(f"pipeline.stages.{s}")}
    assert reaching == TRAINING_STAGES
    for stage in TRAINING_STAGES:
        assert _reach(f"pipeline.stages.{stage}") & FEEDS, stage


def test_only_the_engine_builds_the_optimiser_and_runs_the_loop():
    """No second loop can grow: the recipe's optimiser and schedule, the weighted step and the loop are
    called from pipeline/training.py alone (a method's own second optimiser, e.g. L-MCL's meta-network's, is
    its business)."""
    engine = {"from_recipe", "warmup_cosine", "adamw", "sgd", "weighted_step", "run_steps"}
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name in ("training.py", "optim.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                called = f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "optim" \
                    else f.id if isinstance(f, ast.Name) else None
                if called in engine:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {called}")
    assert offenders == []


class _Reached(Exception):
    pass


def test_each_branch_feed_trains_through_trainer_fit(monkeypatch, teacher_cnn):  # noqa: F811
    """What the stages call (pretraining.pretrain, compression's fit; the continual one below) ends in
    `Trainer.fit` of the one trainer."""
    def fit(self, *args, **kw):
        raise _Reached(type(self.method).__name__)

    monkeypatch.setattr(Trainer, "fit", fit)
    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    corpus = CaptionCorpus(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), [f"caption {i}" for i in range(4)])
    from pipeline.pretraining import pretrain

    with pytest.raises(_Reached, match="Contrastive"):
        pretrain(clip, corpus, PretrainParams(steps=1, batch_size=2, warmup_steps=1), torch.device("cpu"))
    with pytest.raises(_Reached, match="Supervised"):
        compression_trainer.fit(compression_methods()["supervised"](_context("supervised", teacher_cnn)))


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items() if k in before)


def _one_step(run: Trainer) -> dict[str, float]:
    logged = run.step(0, next(iter(run.order)))
    assert "total" in logged and set(run.method.weights()) & set(logged)  # a learning-to-learn step adds its own
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values()), logged
    return logged


@pytest.mark.parametrize("name", sorted(continual_methods()))
def test_every_continual_method_steps_through_the_one_trainer(name, workspace, monkeypatch):  # noqa: F811
    root, params = workspace
    monkeypatch.chdir(root)
    method = continual_methods()[name](make_context(params, "colour", name))  # 2nd task, its reads
    run = continual_trainer.prepare(method)
    assert isinstance(run, Trainer) and type(run) is training.Trainer
    model = method.ctx.student.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _one_step(run)
    assert _changed(before, model)


@pytest.mark.parametrize("name", sorted(compression_methods()))
def test_every_compression_method_steps_through_the_one_trainer(name, teacher_cnn):  # noqa: F811
    method = compression_methods()[name](_context(name, teacher_cnn))
    run = compression_trainer.prepare(method)
    assert type(run) is training.Trainer
    before = {k: v.clone() for k, v in method.ctx.student.state_dict().items()}
    _one_step(run)
    assert _changed(before, method.ctx.student)


def test_pretraining_steps_through_the_one_trainer():
    from pipeline.pretraining import MAX_LOGIT_SCALE, Contrastive, batch_of, caption_tokens

    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    captions = ["a red square", "a blue circle", "a red square", "a green star"]
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    method = Contrastive(clip, caption_tokens(clip, captions), torch.device("cpu"))
    recipe = PretrainParams(steps=1, batch_size=4, warmup_steps=1)
    run = Trainer.build(method, recipe, 1, [(torch.arange(4), images)], lambda item: batch_of(torch.device("cpu"), item))
    before = {k: v.clone() for k, v in clip.model.state_dict().items()}
    assert set(_one_step(run)) == {"contrastive", "total"}
    assert _changed(before, clip.model) and clip.model.logit_scale.item() <= MAX_LOGIT_SCALE


def test_pretraining_with_ema_ends_on_the_moving_average_of_the_weights():
    """pretrain.ema: E0 is torch's EMA of the weights over the steps. Hand-computed for decay d over 3 steps
    with weights w1, w2, w3 after each: the average is w1 after the first update (a copy), then
    d w1 + (1 - d) w2, then d (d w1 + (1 - d) w2) + (1 - d) w3."""
    from pipeline.pretraining import Contrastive, batch_of, caption_tokens

    torch.manual_seed(0)
    clip = clip_lib.build("synth-rn-tiny", 32)
    captions = ["a red square", "a blue circle", "a red square", "a green star"]
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    decay = 0.5
    method = Contrastive(clip, caption_tokens(clip, captions), torch.device("cpu"), ema=decay)
    recipe = PretrainParams(steps=3, batch_size=4, warmup_steps=1, ema=decay)
    items = [(torch.arange(4), images)] * 3
    run = Trainer.build(method, recipe, 3, items, lambda item: batch_of(torch.device("cpu"), item))
    after = []
    for i, item in enumerate(items):
        run.step(i, item)
        after.append({k: v.detach().clone() for k, v in clip.model.named_parameters()})
    with torch.no_grad():
        method.finish()
    for name, value in clip.model.named_parameters():
        w1, w2, w3 = (a[name] for a in after)
        expected = decay * (decay * w1 + (1 - decay) * w2) + (1 - decay) * w3
        torch.testing.assert_close(value, expected, msg=name)
    assert any(not torch.equal(after[0][n], after[2][n]) for n in after[0])  # the steps moved the weights
    assert any(not torch.equal(value, after[2][n]) for n, value in clip.model.named_parameters())  # not the last step's
    with pytest.raises(Exception, match="ema"):
        PretrainParams(ema=1.0)  # a decay of 1 would never move from the first step's weights
