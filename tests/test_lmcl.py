"""Layer-wise MCL (pipeline/compression/lmcl.py): the stages and auxiliary branches of each network family, the
aggregator and the meta-network, the virtual steps (SGD's update, no trace left on the networks) and the
hypergradient they give the meta-network, checked against finite differences."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.compression.base import Batch, DistillContext
from pipeline.compression.params import CohortParams
from pipeline.compression.registry import get_method
from pipeline.compression.virtual import unrolled_sgd
from pipeline.data import TaskData
from pipeline.models import cnn, cohort, stages
from pipeline.models.classifier import image_input
from pipeline.models.layerwise import Aggregator, MatchingWeights

K, N, SIZE = 4, 16, 32
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["resnet10t", "mobilenetv2_050", "tf_mobilenetv3_small_minimal_100", "shufflenet_v2_x0_5"])
def test_a_branch_with_the_networks_own_weights_reproduces_its_output_from_any_stage(arch):
    """The layout is right when a branch made of the network's own later stages, neck, pooling and classifier,
    fed a stage's output, gives back the network's pooled feature and logits exactly."""
    torch.manual_seed(0)
    net = cnn.build(arch, K).eval()
    names = stages.layout(net, arch).stages
    x = torch.randn(2, 3, SIZE, SIZE)
    taken, handles = stages.capture(net, list(names[:-1]))
    pooled = []
    handles.append(cohort.classifier_layer(net, K).register_forward_pre_hook(lambda _m, a: pooled.append(a[0])))
    with torch.no_grad():
        logits = net(x)
        for after in range(len(names) - 1):
            branch = stages.Branch(copy.deepcopy(net), after, arch).eval()
            feature, z = branch(taken[after])
            assert torch.equal(feature, pooled[0].flatten(1)) and torch.equal(z, logits), (arch, after)
    for h in handles:
        h.remove()
    stem = stages.layout(net, arch).stem
    branch = stages.Branch(cnn.build(arch, K), 0, arch)
    assert all(isinstance(branch.network.get_submodule(n), nn.Identity) for n in (*stem, names[0]))


def test_unknown_stages_and_too_many_stages_are_named():
    with pytest.raises(ValueError, match="VisionTransformer.*layer-wise MCL knows"):
        stages.layout(cnn.build("vit_tiny_patch16_224", K), "vit_tiny_patch16_224")
    net = cnn.build("shufflenet_v2_x0_5", K)
    with pytest.raises(ValueError, match="has 3 stages; a branch goes after one of the first 2, not after stage 2"):
        stages.Branch(net, 2, "shufflenet_v2_x0_5")
    with pytest.raises(ValueError, match="cohort.lmcl.stages is 4; shufflenet_v2_x0_5 has 3 stages"):
        _method(stages=4)


def test_the_aggregator_weights_the_stage_logits_by_a_softmax_over_stages():
    torch.manual_seed(0)
    agg = Aggregator(5, 3)
    features, logits = [torch.randn(4, 5) for _ in range(3)], [torch.randn(4, K) for _ in range(3)]
    w = agg.mlp(torch.cat(features, 1)).softmax(1)
    expected = sum(w[:, k, None] * logits[k] for k in range(3))
    assert torch.allclose(agg(features, logits), expected)
    assert torch.allclose(agg(features, [logits[0]] * 3), logits[0], atol=1e-6)  # equal stages: the same logits


def test_matching_weights_are_a_sigmoid_of_a_cosine_per_pair_of_stages():
    torch.manual_seed(0)
    meta = MatchingWeights([[5, 5], [3, 3, 3]], dim=4)
    features = [[torch.randn(6, 5) for _ in range(2)], [torch.randn(6, 3) for _ in range(3)]]
    weights = meta(features)
    assert len(weights) == 2 * 3 and all(w.shape == (6,) and ((w > 0) & (w < 1)).all() for w in weights)
    a, k, b, z = meta.pairs[4]
    cos = F.cosine_similarity(meta.proj[a][k](features[a][k]), meta.proj[b][z](features[b][z]), dim=1)
    assert torch.allclose(weights[4], cos.sigmoid())


def test_unrolled_sgd_takes_torch_sgds_steps():
    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 1, 0, 1])
    params = {n: p.detach().clone().requires_grad_() for n, p in lin.named_parameters()}

    def objective(p):
        return F.cross_entropy(torch.func.functional_call(lin, p, (x,)), y)

    after = unrolled_sgd(params, [objective] * 3, lr=0.1, momentum=0.9, weight_decay=0.01)
    sgd = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        sgd.zero_grad()
        F.cross_entropy(lin(x), y).backward()
        sgd.step()
    for n, p in lin.named_parameters():
        assert torch.allclose(after[n], p, atol=1e-6), n
    assert all(torch.equal(params[n], p0) for n, p0 in zip(params, [*params.values()]))


def test_the_hypergradient_matches_finite_differences():
    """A tiny network and a meta-parameter phi weighting each sample of the inner loss: d/dphi of the task loss
    after two virtual steps on the weighted loss and one on the task, by autograd through the unrolled steps and
    by central differences."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1, 0])
    x_task = torch.randn(6, 3, generator=g, dtype=torch.float64)
    w0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    phi = torch.randn(6, generator=g, dtype=torch.float64, requires_grad=True)

    def task(p):
        return F.cross_entropy(x_task @ p["w"].T, y)

    def meta_loss(phi):
        def inner(p):
            return (torch.sigmoid(phi) * F.cross_entropy(x @ p["w"].T, y, reduction="none")).mean()

        return task(unrolled_sgd({"w": w0.clone().requires_grad_()}, [inner, inner, task], 0.5, 0.9, 0.01))

    grad = torch.autograd.grad(meta_loss(phi), phi)[0]
    eps, numeric = 1e-6, torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        d = torch.zeros(6, dtype=torch.float64)
        d[i] = eps
        with torch.enable_grad():
            numeric[i] = (meta_loss(phi.detach() + d) - meta_loss(phi.detach() - d)).detach() / (2 * eps)
    assert grad.abs().max() > 1e-4  # the meta-parameter matters
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def _task() -> TaskData:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=g, dtype=torch.uint8)  # noqa: E731
    return TaskData("micro", [f"c{k}" for k in range(K)], ["a {}."], images(N), torch.arange(N) % K, images(K),
                    torch.arange(K))


def _method(networks=("shufflenet_v2_x0_5", "mobilenetv2_050"), **lmcl):
    torch.manual_seed(0)
    cp = CohortParams.model_validate({"method": "lmcl", "networks": list(networks), "batch_size": 8, "epochs": 1,
                                      "embed_dim": 16, "lmcl": {"meta_dim": 8, **lmcl}})
    ctx = DistillContext(cohort.build(list(networks), K, embed_dim=16), _task(), cp, torch.device("cpu"), None,
                         eval_batch_size=8)
    return get_method("lmcl")(ctx)


def _batch(task) -> Batch:
    idx = torch.arange(8)
    return Batch(image_input(task.train_images[idx]), task.train_labels[idx], idx, torch.zeros(8, dtype=torch.bool))


def test_the_meta_step_moves_the_meta_network_and_leaves_every_weight_and_statistic_as_it_was():
    method = _method()
    method.model.train()
    before = {k: v.clone() for k, v in method.model.state_dict().items()}
    meta_before = [w.clone() for w in method.meta.parameters()]
    loss = method.meta_step(_batch(method.ctx.task))
    assert loss > 0
    after = method.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics, bit for bit
    assert any(not torch.equal(a, b) for a, b in zip(meta_before, method.meta.parameters()))
    assert all(p.grad is None for p in method.parameters())  # nothing left for the run's optimiser


def test_the_networks_loss_gives_the_meta_network_no_gradient_and_every_stage_a_term():
    method = _method()
    terms = method.terms(_batch(method.ctx.task))
    sum(method.weights()[k] * v for k, v in terms.items()).backward()
    assert all(w.grad is None for w in method.meta.parameters())
    assert all(p.grad is not None for p in method.added.parameters())  # branches, stage heads, aggregators
    assert method.describe()["stages"] == [["stage2", "stage3", "stage4"], ["blocks.4", "blocks.5", "blocks.6"]]
    one = _method(stages=1)  # no branch: the four terms of MCL between the networks' own embeddings
    assert one.added_parameters() == sum(p.numel() for p in one.model.aggregators.parameters())
