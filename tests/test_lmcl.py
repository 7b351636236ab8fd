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
from pipeline.params.compression import CohortParams
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
    assert torch.allclose(agg(features, [logits[0]] * 3), logits[0], atol=1e-6)  # equal stages: the same logits
    with torch.no_grad():  # hand case: a last layer of zeros and biases log 1, log 2, log 3 -> weights 1/6, 2/6, 3/6
        agg.mlp[-1].weight.zero_()
        agg.mlp[-1].bias.copy_(torch.tensor([1.0, 2.0, 3.0]).log())
    assert torch.allclose(agg(features, logits), (logits[0] + 2 * logits[1] + 3 * logits[2]) / 6, atol=1e-6)


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
    kept = {n: p.detach().clone() for n, p in params.items()}

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
    assert all(torch.equal(params[n], kept[n]) for n in params)  # the inputs are not stepped in place


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
    assert torch.allclose(grad, _reverse_pass(w0, phi, x, y, task), rtol=1e-10, atol=1e-14)
    eps, numeric = 1e-6, torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        d = torch.zeros(6, dtype=torch.float64)
        d[i] = eps
        with torch.enable_grad():
            numeric[i] = (meta_loss(phi.detach() + d) - meta_loss(phi.detach() - d)).detach() / (2 * eps)
    assert grad.abs().max() > 1e-4  # the meta-parameter matters
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-9)


def _reverse_pass(w0, phi, x, y, task, lr=0.5, momentum=0.9, wd=0.01):
    """The hypergradient by hand, as the authors' MetaSGD.meta_backward runs it: step forward keeping each theta_t,
    then back through  b' = mu b + g(theta) + wd theta,  theta' = theta - lr b'  with the adjoints (A_theta, A_b):
    a = A_b - lr A_theta;  dphi += d<g_t, a>/dphi;  A_theta += H_t a + wd a;  A_b = mu a."""
    phi = phi.detach().requires_grad_()

    def inner(w):
        return (torch.sigmoid(phi) * F.cross_entropy(x @ w.T, y, reduction="none")).mean()

    objectives, thetas, w, buf = [inner, inner, lambda w: task({"w": w})], [], w0.clone(), None
    for objective in objectives:
        w = w.detach().requires_grad_()
        thetas.append(w)
        d = torch.autograd.grad(objective(w), w)[0] + wd * w.detach()
        buf = d if buf is None else momentum * buf + d
        w = w.detach() - lr * buf
    w = w.requires_grad_()
    a_theta, a_b = torch.autograd.grad(task({"w": w}), w)[0], torch.zeros_like(w0)
    hyper = torch.zeros_like(phi)
    for objective, theta in zip(reversed(objectives), reversed(thetas)):
        a = a_b - lr * a_theta
        g = torch.autograd.grad(objective(theta), theta, create_graph=True)[0]
        h_a, d_phi = torch.autograd.grad((g * a).sum(), [theta, phi], allow_unused=True)
        hyper = hyper + (d_phi if d_phi is not None else 0)
        a_theta = a_theta + h_a + wd * a
        a_b = momentum * a
    return hyper


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
    method.meta_step(_batch(method.ctx.task))
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


def test_the_meta_losss_gradient_matches_finite_differences_through_the_networks():
    """The wiring of the meta step on real networks, in float64: the meta-network's gradient of the stages' CE
    after a virtual step on the weighted MCL loss and one on the CE, against a central difference along a random
    direction. ReLU kinks make such a difference noisy at any useful step (the networks' activation patterns
    move with the virtual step), so the networks are made smooth first: SiLU for ReLU, average for max pooling."""
    method = _method(networks=("shufflenet_v2_x0_5", "shufflenet_v2_x0_5"), stages=2, virtual_steps=1)
    for module in [*method.model.modules(), *method.meta.modules()]:
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.SiLU())
            elif isinstance(child, nn.MaxPool2d):
                setattr(module, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding))
    method.model.double().train()
    method.meta.double()
    batch = _batch(method.ctx.task)
    batch.images = batch.images.double()
    params = list(method.meta.parameters())
    grads = torch.autograd.grad(method.meta_loss(batch), params)
    g = torch.Generator().manual_seed(0)
    direction = [torch.randn(p.shape, generator=g, dtype=torch.float64) for p in params]
    eps = 1e-7

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.add_(sign * eps * d)
        value = method.meta_loss(batch).item()
        with torch.no_grad():
            for p, d in zip(params, direction):
                p.sub_(sign * eps * d)
        return value

    numeric = (shifted(1) - shifted(-1)) / (2 * eps)
    analytic = sum((gr * d).sum() for gr, d in zip(grads, direction)).item()
    assert abs(analytic) > 1.0 and analytic == pytest.approx(numeric, rel=1e-3)


def test_the_aggregates_are_kl_targets_only_and_the_meta_step_follows_meta_every(monkeypatch):
    method = _method(meta_every=3)
    terms = method.terms(_batch(method.ctx.task))
    terms["aggregate_kd"].backward()
    assert all(p.grad is None for p in method.model.aggregators.parameters())  # detached targets
    calls = []
    monkeypatch.setattr(method, "meta_step", lambda batch, scale: calls.append(scale))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.005)  # half the recipe's lr: the schedule's factor 0.5
    for step in range(7):
        method.step(step, _batch(method.ctx.task), optimizer)
    assert calls == [0.5, 0.5, 0.5]  # steps 0, 3, 6
