"""The feature maps the feature methods (`fitnet`, `channel_matching`) distil: the teacher's and the student's
maps at paired distillation sites (pipeline/models/sites.py: decided by network type, spec
"Distillation sites"), read by forward hooks, the teacher's pooled to the student's size where they differ."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.compression.base import Batch, DistillContext, DistillMethod
from pipeline.errors import InputError
from pipeline.losses.channel_matching import feature_mse, partial_l2
from pipeline.models import sites as S
from pipeline.models.classifier import image_input

DISTANCE_LOSSES = {"mse": feature_mse, "partial_l2": partial_l2}  # distill.feature.loss


class SitePairs:
    """The run's site pairs (`distill.feature.sites`, or each student stage's last block with the teacher's of
    its size), their channel counts, and the forward passes that read them."""

    def __init__(self, ctx: DistillContext):
        if ctx.teacher is None or ctx.teacher.module is None:
            raise InputError("distill.teacher: feature distillation needs the CNN teacher ('cnn')")
        self.ctx, self.teacher, self.student = ctx, ctx.teacher.module, ctx.student
        size = tuple(ctx.task.train_images.shape[-2:])
        names = ctx.params.feature.sites
        try:
            self.pairs = S.resolve_pairs(self.teacher, self.student, names, size) if names else \
                S.pair_sites(self.teacher, self.student, size)
        except ValueError as e:
            raise InputError(f"distill.feature.sites: {e}") from None
        if not self.pairs:
            raise InputError(f"distill.feature.sites: no student site at least 2x2 has a teacher site as large at "
                             f"{size[0]}x{size[1]} px; name the pairs")
        t_shapes = S.site_shapes(self.teacher, [p.teacher for p in self.pairs], size)
        s_shapes = S.site_shapes(self.student, [p.student for p in self.pairs], size)
        if not names:
            # Default pairs keep the student site no wider than the teacher's: channel matching picks n of the
            # teacher's m channels (n <= m), and every feature method distils at the same sites (e.g. a
            # MobileNetV3's 576-channel head conv against a ResNet's 256-channel stage at 2x2 is left out).
            self.pairs = [p for p in self.pairs if s_shapes[p.student.name][0] <= t_shapes[p.teacher.name][0]]
            if not self.pairs:
                raise InputError("distill.feature.sites: every default student site is wider than the teacher's "
                                 "of its size; name the pairs")
        # (n student channels, m teacher channels) of each pair
        self.channels = [(s_shapes[p.student.name][0], t_shapes[p.teacher.name][0]) for p in self.pairs]
        self.loss = DISTANCE_LOSSES[ctx.params.feature.loss]

    def student_maps(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The student's logits and its maps at the pairs' student sites (with gradient)."""
        with S.FeatureTap(self.student, [p.student for p in self.pairs]) as tap:
            logits = self.student(images)
        return logits, [tap.features[p.student.name] for p in self.pairs]

    @torch.no_grad()
    def teacher_maps(self, images: Tensor) -> list[Tensor]:
        """The frozen teacher's maps at the pairs' teacher sites, average-pooled to the student's size."""
        with S.FeatureTap(self.teacher, [p.teacher for p in self.pairs]) as tap:
            self.teacher(images)
        maps = [tap.features[p.teacher.name] for p in self.pairs]
        return [m if p.pool_to is None else F.adaptive_avg_pool2d(m, p.pool_to) for m, p in zip(maps, self.pairs)]

    @functools.cached_property
    def training_maps(self) -> list[Tensor]:
        """Per pair, (2, N, C, H, W): the teacher's maps of every training image as is (0) and mirrored (1), on
        the CPU. Flips are the only augmentation and the teacher is frozen in eval mode, so, as for its logits
        (DistillContext.teacher_logits), one pass per view replaces a teacher forward pass at every step."""
        ctx, images = self.ctx, self.ctx.task.train_images
        views = []
        for view in (images, images.flip(-1)):
            with ctx.autocast():  # kept in fp32 whatever the precision (`.float()`: a no-op in fp32)
                chunks = [[m.float().cpu() for m in self.teacher_maps(image_input(view[i : i + ctx.eval_batch_size].to(ctx.device)))]
                          for i in range(0, len(view), ctx.eval_batch_size)]
            views.append([torch.cat(maps) for maps in zip(*chunks)])
        return [torch.stack(pair) for pair in zip(*views)]

    def teacher_maps_of(self, batch: Batch) -> list[Tensor]:
        """The teacher's maps of the batch's training images (`teacher_maps` of `batch.images`): from the cache
        when flips are the only augmentation, else a forward pass on the batch's crops."""
        if batch.pixels is not None:
            return self.teacher_maps(batch.images)  # the CNN teacher and student share the input normalisation
        return [m[batch.flips.long().cpu(), batch.indices.cpu()].to(self.ctx.device) for m in self.training_maps]

    def names(self) -> list[list[str]]:
        return [[p.teacher.name, p.student.name] for p in self.pairs]


class FeatureDistillation(DistillMethod):
    """What `fitnet` and `channel_matching` share: the site pairs, the student's cross entropy plus
    `feature.weight` x the distance loss averaged over the pairs (so the weight means the same whatever their
    number); a subclass says how one pair's student map meets the teacher's (`pair_loss`)."""

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.sites = SitePairs(ctx)

    def weights(self) -> dict[str, float]:
        return {"ce": 1.0, "feature": self.ctx.params.feature.weight}

    def pair_loss(self, k: int, student: Tensor, teacher: Tensor) -> Tensor:
        """The distance loss of pair `k` between the student's map and the teacher's."""
        raise NotImplementedError

    def terms(self, batch: Batch):
        logits, student = self.sites.student_maps(batch.images)
        teacher = self.sites.teacher_maps_of(batch)
        feature = sum(self.pair_loss(k, s, t) for k, (s, t) in enumerate(zip(student, teacher))) / len(teacher)
        return {"ce": F.cross_entropy(logits, batch.labels), "feature": feature}

    def describe(self) -> dict:
        return {"sites": self.sites.names()}
