"""Method `channel_matching` (docs/methods/channel_matching.md; closest paper: Matching Guided Distillation, Yue,
Deng, Zhou, ECCV 2020): the teacher's m channels at each site pair are matched to the student's n <= m channels,
without any learnable adapter, and a distance loss (`distill.feature.loss`) is put on every matched pair.

The rule (`distill.matching.rule`) builds the target of each student channel:
- sparse: one distinct teacher channel each (the padded assignment);
- random: one of the r = m // n channels the replicated Hungarian matching gives it, drawn per step or per image;
- maxpool: the elementwise maximum of those r channels.
The matching is recomputed every `rematch_every` epochs on the first `rematch_images` training images (the
student's channels change as it learns); it is a discrete decision and takes no gradient."""
from __future__ import annotations

import torch
from torch import Tensor

from pipeline import runtime
from pipeline.compression.base import DistillContext
from pipeline.compression.features import FeatureDistillation
from pipeline.compression.registry import register_method
from pipeline.errors import InputError
from pipeline.losses import channel_matching as M
from pipeline.models.classifier import image_input


@register_method
class ChannelMatching(FeatureDistillation):
    name = "channel_matching"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        for (n, m), (t, s) in zip(self.sites.channels, self.sites.names()):
            if n > m:
                raise InputError(f"distill.feature.sites: pair ({t}, {s}): the student site has {n} channels, the "
                                 f"teacher's {m}; channel matching picks n of the teacher's m channels (n <= m)")
        self.mp = ctx.params.matching
        # Its own random stream (choice of channels, random selection): the flips drawn from ctx.generator stay
        # those of every other method of the same seed.
        self.generator = torch.Generator().manual_seed(runtime.stable_seed(ctx.params.seed, "channel matching"))
        self.assignments: list[Tensor] = []  # per pair: (n,) for sparse, (n, r) for random and maxpool
        self.matchings = 0

    def on_epoch(self, epoch: int) -> None:
        if epoch % self.mp.rematch_every == 0:
            self.assignments = self.match()
            self.matchings += 1

    @torch.no_grad()
    def distances(self) -> list[Tensor]:
        """Each pair's (n, m) distance matrix over the first `rematch_images` training images, both networks in
        eval mode (no BatchNorm statistic moves); every module's mode is restored."""
        ctx = self.ctx
        modes = [(m, m.training) for m in ctx.student.modules()]
        ctx.student.eval()
        images = ctx.task.train_images[: self.mp.rematch_images]
        total: list[Tensor] = [torch.zeros(n, m, dtype=torch.float64) for n, m in self.sites.channels]
        try:
            for start in range(0, len(images), ctx.eval_batch_size):
                x = image_input(images[start : start + ctx.eval_batch_size].to(ctx.device))
                _, student = self.sites.student_maps(x)
                teacher = [m[0, start : start + len(x)].to(ctx.device) for m in self.sites.training_maps]  # unflipped
                for k, (s, t) in enumerate(zip(student, teacher)):
                    total[k] += M.channel_distance(s, t, self.mp.distance).double().cpu()  # a sum over images
        finally:
            for m, training in modes:
                m.training = training
        return total

    def match(self) -> list[Tensor]:
        if self.mp.rule == "sparse":
            return [M.sparse_matching(d).to(self.ctx.device) for d in self.distances()]
        return [M.replicated_matching(d, self.generator, self.mp.choose).to(self.ctx.device) for d in self.distances()]

    def target(self, teacher: Tensor, assignment: Tensor) -> Tensor:
        if self.mp.rule == "sparse":
            return M.gather_channels(teacher, assignment)
        if self.mp.rule == "random":
            return M.random_selection(teacher, assignment, self.generator, self.mp.select_per)
        return M.max_pooling(teacher, assignment)

    def pair_loss(self, k, student, teacher):
        return self.sites.loss(student, self.target(teacher, self.assignments[k]))

    def describe(self) -> dict:
        per = {"select_per": self.mp.select_per} if self.mp.rule == "random" else {}
        return {"rule": self.mp.rule, **per, **super().describe(), "matchings": self.matchings}
