"""Method `lmcl`: layer-wise mutual contrastive learning (docs/methods/mcl.md, "Layer-wise MCL"; Yang et
al., "Online Knowledge Distillation via Mutual Contrastive Learning for Visual Recognition", TPAMI 2023; the
authors' main_layer_mcl_cifar_meta.py).

Each network of the cohort gets an auxiliary branch after each of its last `stages` - 1 stages (fresh copies
of the later stages and a classifier, pipeline/models/stages.py), so stage k of network a has a pooled feature
f_ak, logits z_ak and, through its own projection head, an embedding v_ak (the last stage: the network's own
output and the cohort's head). Per step:

    sum_{a,k} CE(z_ak) + sum_a CE(g_a) + sum_{a,b} T^2 KL(g_b || z_aS)
      + alpha VCL + beta ICL + gamma soft VCL + lam soft ICL   (lmcl_terms: every pair of stages of two
                                                                 networks, each image weighted by w)

g_a = network a's aggregator of its stage logits (detached as a KL target); w = sigmoid(cos(P_ak f_ak,
P_bz f_bz)) from the meta-network, a constant in this loss. Every `meta_every` steps, after the update: virtual
SGD steps of the networks, branches and heads on the weighted MCL loss (then one on the stages' CE), the stages'
CE after them, its gradient in the meta-network (through the virtual steps' dependence on w) one SGD step of it.
The virtual steps are functional (compression/virtual.py): the networks' weights and BatchNorm statistics are
left exactly as they were.

Only the cohort is saved: branches, stage heads, aggregators and the meta-network serve training only (the
authors test every stage classifier and report the best; here each network is tested by its own classifier)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.compression.registry import register_method
from pipeline.compression.virtual import unrolled_sgd
from pipeline.losses.contrastive import lmcl_terms
from pipeline.losses.kd import knowledge_distillation
from pipeline.models import cnn, stages
from pipeline.models.cohort import Cohort, ProjectionHead
from pipeline.models.layerwise import Aggregator, MatchingWeights

MCL_TERMS = ("vcl", "icl", "soft_vcl", "soft_icl")


class LayerwiseCohort(nn.Module):
    """The cohort with every network's auxiliary branches, stage projection heads and aggregator: `forward`
    gives, per network a and stage k (the last: the network's own), the logits z_ak, pooled features f_ak and
    embeddings v_ak. One module, so the virtual steps can call it with substituted weights (functional_call)."""

    def __init__(self, cohort: Cohort, archs: list[str], num_stages: int, num_classes: int, embed_dim: int):
        super().__init__()
        self.cohort = cohort
        self.hooked: list[list[str]] = []  # per network: the stages whose outputs feed its branches
        self.stage_names: list[list[str]] = []
        self.widths: list[int] = []  # per network: the width of every stage's pooled feature (the network's own)
        self.branches, self.heads, self.aggregators = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for arch, network, head in zip(archs, cohort.networks, cohort.heads):
            names = stages.layout(network, arch).stages
            if num_stages > len(names):
                raise ValueError(f"cohort.lmcl.stages is {num_stages}; {arch} has {len(names)} stages")
            first = len(names) - num_stages
            self.stage_names.append(list(names[first:]))
            self.hooked.append(list(names[first:-1]))
            self.branches.append(nn.ModuleList(stages.Branch(cnn.build(arch, num_classes), first + i, arch)
                                               for i in range(num_stages - 1)))
            width = head.proj[0].in_features
            self.widths.append(width)
            self.heads.append(nn.ModuleList(ProjectionHead(width, embed_dim) for _ in range(num_stages - 1)))
            self.aggregators.append(Aggregator(width, num_stages))

    def forward(self, x: Tensor) -> tuple[list[list[Tensor]], list[list[Tensor]], list[list[Tensor]]]:
        final_logits, pooled, taken = self.cohort.taps(x, self.hooked)
        logits, features, embeddings = [], [], []
        for a, branches in enumerate(self.branches):
            outs = [branch(t) for branch, t in zip(branches, taken[a])]
            features.append([*(f for f, _ in outs), pooled[a]])
            logits.append([*(z for _, z in outs), final_logits[a]])
            heads = [*self.heads[a], self.cohort.heads[a]]
            embeddings.append([head(f) for head, f in zip(heads, features[a])])
        return logits, features, embeddings


def stage_ce(logits: list[list[Tensor]], labels: Tensor) -> Tensor:
    """sum over networks and stages of CE: the authors' outer (meta) objective and the first term of the loss."""
    return sum(F.cross_entropy(z, labels) for net in logits for z in net)


@register_method
class LayerwiseMCL(DistillMethod):
    name = "lmcl"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        p, cp = ctx.params.lmcl, ctx.params
        classes = len(ctx.task.classes)
        self.model = LayerwiseCohort(ctx.student, list(cp.networks), p.stages, classes, cp.embed_dim).to(ctx.device)
        self.added = nn.ModuleList([self.model.branches, self.model.heads, self.model.aggregators])
        widths = [[w] * p.stages for w in self.model.widths]
        # The meta-network has its own optimiser and is not among `parameters()`: the run's optimiser never moves it.
        self.meta = MatchingWeights(widths, p.meta_dim).to(ctx.device)
        self.meta_optimizer = torch.optim.SGD(self.meta.parameters(), lr=p.meta_lr, momentum=0.9,
                                              weight_decay=p.meta_weight_decay, nesterov=True)

    def weights(self) -> dict[str, float]:
        p = self.ctx.params.lmcl
        return {"ce": 1.0, "aggregate_ce": 1.0, "aggregate_kd": 1.0,
                "vcl": p.alpha, "icl": p.beta, "soft_vcl": p.gamma, "soft_icl": p.lam}

    def _mcl(self, embeddings, features, labels, weights=None) -> dict[str, Tensor]:
        p = self.ctx.params.lmcl
        if weights is None:
            weights = self.meta(features)
        return lmcl_terms(embeddings, labels, p.tau, p.temperature, weights, p.icl_diagonal)

    def terms(self, batch: Batch):
        p = self.ctx.params.lmcl
        logits, features, embeddings = self.model(batch.images)
        with torch.no_grad():  # the matching weights are constants of the networks' loss
            weights = self.meta(features)
        aggregates = [agg(f, z) for agg, f, z in zip(self.model.aggregators, features, logits)]
        return {
            "ce": stage_ce(logits, batch.labels),
            "aggregate_ce": sum(F.cross_entropy(g, batch.labels) for g in aggregates),
            "aggregate_kd": sum(knowledge_distillation(z[-1], g, p.temperature) for z in logits for g in aggregates),
            **self._mcl(embeddings, features, batch.labels, weights),
        }

    def step(self, step: int, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        logged = super().step(step, batch, optimizer)
        if step % self.ctx.params.lmcl.meta_every == 0:
            self.meta_step(batch, optimizer.param_groups[0]["lr"] / self.ctx.params.lr)
        return logged

    def meta_step(self, batch: Batch, scale: float = 1.0) -> float:
        """One meta-optimisation on `batch` (see the module docstring); `scale`: the run's schedule factor.
        Returns the stages' CE after the virtual steps (the meta loss)."""
        p = self.ctx.params.lmcl
        with self.ctx.autocast():  # the virtual steps' forward passes and losses; their final gradient outside
            meta_loss = self.meta_loss(batch, scale)
        grads = torch.autograd.grad(meta_loss, list(self.meta.parameters()))
        for w, g in zip(self.meta.parameters(), grads):
            w.grad = g
        for group in self.meta_optimizer.param_groups:
            group["lr"] = p.meta_lr * scale
        self.meta_optimizer.step()
        return float(meta_loss.detach())

    def meta_loss(self, batch: Batch, scale: float = 1.0) -> Tensor:
        """The stages' CE after the virtual steps, a function of the meta-network through them."""
        p = self.ctx.params.lmcl
        weights = self.weights()
        # What the virtual steps move: networks, branches and projection heads (the authors' MetaSGD over `net`
        # and the MCL criterion's embeddings), not the aggregators. BatchNorm statistics move in copies.
        moved = {n: w for n, w in self.model.named_parameters() if not n.startswith("aggregators.")}
        stats = {n: b.clone() for n, b in self.model.named_buffers()}

        def outputs(params):
            return functional_call(self.model, {**stats, **params}, (batch.images,))

        def weighted_mcl(params):
            _, features, embeddings = outputs(params)
            terms = self._mcl(embeddings, features, batch.labels)
            return sum(weights[k] * terms[k] for k in MCL_TERMS)

        def task(params):
            return stage_ce(outputs(params)[0], batch.labels)

        objectives = [weighted_mcl] * p.virtual_steps + ([task] if p.virtual_task_step else [])
        after = unrolled_sgd(moved, objectives, p.virtual_lr * scale, momentum=0.9, weight_decay=p.meta_weight_decay)
        return task(after)

    def describe(self) -> dict:
        p = self.ctx.params.lmcl
        return {"stages": self.model.stage_names, "branch_parameters": self.added_parameters(),
                "meta_parameters": sum(w.numel() for w in self.meta.parameters()), "meta_every": p.meta_every}
