"""The cohort of online distillation (pipeline/models/cohort.py), its batches, and what each online method
trains: every network and head under MCL, every network under DML, each network on its own CE alone."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.compression import data as D
from pipeline.compression.base import Batch, DistillContext
from pipeline.params.compression import CohortParams, DistillParams
from pipeline.compression.registry import get_method
from pipeline.names import SUPERVISED
from pipeline.compression.trainer import prepare
from pipeline.data import TaskData
from pipeline.models import classifier, cohort
from pipeline.models.classifier import image_input

K, N, SIZE = 4, 16, 32
NETS = ["mobilenetv2_050", "shufflenet_v2_x0_5"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _task() -> TaskData:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)  # noqa: E731
    return TaskData("micro", [f"c{k}" for k in range(K)], ["a {}."], images(N), torch.arange(N) % K, images(K),
                    torch.arange(K))


def _context(method: str, **recipe) -> DistillContext:
    torch.manual_seed(0)
    cp = CohortParams.model_validate({"method": method, "networks": NETS, "batch_size": 8, "epochs": 1,
                                      "embed_dim": 16, **recipe})
    return DistillContext(cohort.build(NETS, K, embed_dim=16), _task(), cp, torch.device("cpu"), None, eval_batch_size=8)


def _batch(ctx) -> Batch:
    idx = torch.arange(8)
    return Batch(image_input(ctx.task.train_images[idx]), ctx.task.train_labels[idx], idx, torch.zeros(8, dtype=torch.bool))


def _grads(module) -> list:
    return [p.grad for p in module.parameters()]


def test_per_class_batches_give_every_image_a_positive():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 1 + [3] * 4)
    batches = list(D.per_class_batches(labels, 6, 20, seed=0, per_class=2))
    assert len(batches) == 20
    for b in batches:
        counts = torch.bincount(labels[b], minlength=4)
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2]  # 3 classes, 2 images each
        for c in labels[b].unique():
            members = b[labels[b] == c]
            assert members.unique().numel() == min(2, int((labels == c).sum()))  # distinct where the class allows
    again = list(D.per_class_batches(labels, 6, 20, seed=0, per_class=2))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    with pytest.raises(ValueError, match="needs 5 classes"):
        next(D.per_class_batches(labels, 10, 1, seed=0, per_class=2))


def test_embeddings_are_unit_vectors_of_each_networks_classifier_input():
    ctx = _context("mcl")
    model, x = ctx.student.eval(), _batch(ctx).images
    logits, embeddings = model.embed(x)
    assert torch.equal(logits, model(x))
    for v in embeddings:
        assert v.shape == (8, 16)
        torch.testing.assert_close(v.norm(dim=1), torch.ones(8))
    pooled = []
    layer = cohort.classifier_layer(model.networks[1], K)
    hook = layer.register_forward_pre_hook(lambda _m, args: pooled.append(args[0]))
    model.networks[1](x)
    hook.remove()
    torch.testing.assert_close(embeddings[1], model.heads[1](pooled[0]))


def test_mcl_trains_every_network_and_every_head():
    ctx = _context("mcl")
    method = get_method("mcl")(ctx)
    terms = method.terms(_batch(ctx))
    assert set(terms) == {"ce", "vcl", "icl", "soft_vcl", "soft_icl"} == set(method.weights())
    sum(method.weights()[k] * v for k, v in terms.items()).backward()
    for part in [*ctx.student.networks, *ctx.student.heads]:
        assert any(g is not None and g.abs().sum() > 0 for g in _grads(part))


def test_dml_trains_every_network_from_the_others():
    ctx = _context("dml")
    terms = get_method("dml")(ctx).terms(_batch(ctx))
    assert set(terms) == {"ce", "dml"} and terms["dml"] > 0
    terms["dml"].backward()  # the mimicry term alone reaches both networks
    for network in ctx.student.networks:
        assert any(g is not None and g.abs().sum() > 0 for g in _grads(network))


def test_alone_trains_each_network_on_its_own_cross_entropy():
    ctx = _context("alone")
    batch = _batch(ctx)
    get_method(SUPERVISED)(ctx).terms(batch)["ce"].backward()
    assert all(g is None for g in _grads(ctx.student.heads))
    first = [g.clone() for g in _grads(ctx.student.networks[0])]
    ctx.student.zero_grad(set_to_none=True)
    F.cross_entropy(ctx.student.networks[0](batch.images), batch.labels).backward()
    for a, b in zip(first, _grads(ctx.student.networks[0])):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name, kind", [("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)])
def test_the_recipe_names_the_optimiser_over_every_network_and_head(name, kind):
    ctx = _context("mcl", optimizer=name, lr=0.1, weight_decay=5e-4)
    run = prepare(get_method("mcl")(ctx))
    assert type(run.optimizer) is kind and all(g["initial_lr"] == 0.1 for g in run.optimizer.param_groups)
    held = {id(p) for g in run.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in ctx.student.parameters()}
    before = [p.detach().clone() for p in ctx.student.parameters()]
    get_method("mcl")(ctx).step(0, run.batch(torch.arange(8)), run.optimizer)
    assert all(not torch.equal(a, p) for a, p in zip(before, ctx.student.networks[0].parameters()) if p.ndim > 1)


def test_a_cohort_checkpoint_loads_back_and_predicts_the_ensemble(tmp_path):
    ctx = _context("mcl")
    model = ctx.student.eval()
    classifier.save(model, tmp_path, cohort.meta(ctx.params, ctx.task.classes))
    loaded, meta = classifier.load(tmp_path)
    x = _batch(ctx).images
    assert meta["networks"] == NETS
    torch.testing.assert_close(loaded(x), model(x))
    torch.testing.assert_close(classifier.logits_of(loaded, x).exp(), model(x).softmax(-1).mean(0))


def test_bad_cohort_params_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown cohort method 'kd'"):
        CohortParams(method="kd")
    with pytest.raises(ValueError, match="not a multiple of per_class"):
        CohortParams(batch_size=33)
    with pytest.raises(ValueError, match="at least 2"):
        CohortParams(networks=["resnet18"])
    with pytest.raises(ValueError, match="set cohort.method"):
        DistillParams(method="mcl", student="resnet18")
