"""Fidelity of the baselines to their definitions, on micro tasks (issue 8, item 5):

- LwM: at student == teacher (the first step of task 1) L_AD and its gradient are exactly 0. L_AD is an L1
  distance, whose gradient is full-sized for any difference of the maps however small, so "close to 0" is not
  enough: teacher and student must compute their maps bit for bit alike.
- ZSCL: with `loss.zscl_text: e0` (ZSCL's code) the student's reference logits use E0's caption features, so
  L_zscl sends no gradient into the student's text tower; with `student` it does.
"""
from __future__ import annotations

import pytest
import torch

from pipeline.continual import get_method
from pipeline.continual.trainer import set_train_mode
from pipeline.losses import lwm_distillation
from pipeline.losses.kd import LWM_FORMS
from pipeline.models import clip as clip_lib
from pipeline.training import Batch
from tests.test_baselines import first_batch, make_context, with_loss
from tests.test_baselines import rn_workspace, workspace  # noqa: F401  (module fixtures: micro tasks, E0, 'shape')


def student_at_first_step(params, form: str):
    """Task 1's LwM with the student a copy of its teacher E0, in the mode `train_task` trains it in."""
    ctx = make_context(with_loss(params, lwm_form=form), "shape", "lwm")
    set_train_mode(ctx.student.model, params.train.freeze_bn)
    ctx.student.model.logit_scale.requires_grad_(False)
    return ctx, get_method("lwm")(ctx)


def counting(calls: list, encode_texts):
    """encode_texts, recording the model of every call in `calls`."""
    return lambda clip, texts: calls.append(clip) or encode_texts(clip, texts)


def gradients(model: torch.nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tower", ["rn_workspace", "workspace"])  # synth-rn-tiny at 64 px, synth-vit-tiny at 32 px
@pytest.mark.parametrize("form", LWM_FORMS)
def test_lwm_student_equal_to_teacher_gets_exactly_zero_attention_loss_and_gradient(request, monkeypatch, tower, form):
    root, params = request.getfixturevalue(tower)
    monkeypatch.chdir(root)
    ctx, method = student_at_first_step(params, form)
    # A shuffled batch, smaller than the teacher's (eval.batch_size, in order): the batching must not matter.
    idx = torch.randperm(len(ctx.task.train_labels), generator=torch.Generator().manual_seed(0))[:8]
    terms = method.terms(Batch(ctx.task.train_images[idx], ctx.task.train_labels[idx], idx))

    assert terms["ad"].item() == 0.0
    grads = gradients(ctx.student.model, terms["ad"])
    assert any(n.startswith("visual.") for n in grads)  # the graph reaches the image tower (create_graph)...
    nonzero = [n for n, g in grads.items() if not torch.all(g == 0)]
    assert not nonzero  # ...with exactly 0 everywhere

    # L_D: the student's base-class logits are the teacher's bit for bit, so the term is at its value for
    # y_hat == y; the bce and softmax forms are minimal there (the paper's sigmoid form is not, see kd.py).
    y = method.teacher_logits[idx]
    assert torch.equal(terms["kd"].detach(), lwm_distillation(y, y, form, params.loss.kd_temperature))
    if form != "sigmoid":
        # Not exactly 0 for softmax even at bit-equal logits: a float softmax does not sum to exactly 1, which
        # leaves ~5e-7 here (L_C's gradient is ~1); L_D is smooth, so that residue stays this small.
        kd_grads = gradients(ctx.student.model, terms["kd"])
        assert max(g.abs().max().item() for g in kd_grads.values()) < 1e-5


@pytest.mark.parametrize("zscl_text", ["e0", "student"])
def test_zscl_trains_the_text_tower_only_with_the_students_caption_features(workspace, monkeypatch, zscl_text):
    root, params = workspace
    monkeypatch.chdir(root)
    assert params.loss.zscl_text == "e0"  # the default: ZSCL's own form
    ctx = make_context(with_loss(params, zscl_text=zscl_text), "colour", "zscl")  # the 'shape' model has drifted from E0
    method = get_method("zscl")(ctx)
    encoded_by = []  # which model each encode_texts call ran
    monkeypatch.setattr(clip_lib, "encode_texts", counting(encoded_by, clip_lib.encode_texts))
    loss = method.terms(Batch(*first_batch(ctx)))["zscl"]
    assert loss.item() > 0

    # E0's text tower runs no more per step (its features of the fixed caption pool are computed once, as the
    # method starts; the corpus oracle's, of each batch's captions, once per step: they serve the teacher and,
    # with e0, the student); the student's runs for L_ce's class prompts, and with "student" for the captions too.
    assert sum(c is method.e0 for c in encoded_by) == (1 if params.loss.zscl_reference == "corpus_oracle" else 0)
    assert sum(c is ctx.student for c in encoded_by) == (1 if zscl_text == "e0" else 2)

    grads = gradients(ctx.student.model, loss)
    text = {n: g for n, g in grads.items() if not n.startswith("visual.")}
    assert any(g.abs().sum() > 0 for n, g in grads.items() if n.startswith("visual."))  # both directions: image tower
    if zscl_text == "e0":
        assert not text  # no text-tower parameter is in L_zscl's graph
    else:
        assert any(g.abs().sum() > 0 for g in text.values())
        assert "logit_scale" not in text  # frozen: cosine_logits detaches it
