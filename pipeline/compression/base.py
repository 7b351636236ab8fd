"""What a distillation method of the compression branch sees, and the interface every method implements
(mirrors pipeline/continual/base.py): named loss terms per step, weighted by `weights()`; a method that needs
another update (learning-to-learn) overrides `step`, never the loop (pipeline/compression/trainer.py)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline import runtime
from pipeline.params.compression import Recipe
from pipeline.compression.teachers import Teacher, training_logits
from pipeline.data import TaskData
from pipeline.training import Terms, weighted_step


@dataclass
class Batch:
    images: Tensor  # (B, 3, H, W) network input (normalised, flipped where `flips`)
    labels: Tensor  # (B,) int64
    indices: Tensor  # (B,) positions in the training set (the teacher's cached logits are looked up by them)
    flips: Tensor  # (B,) bool: which images are mirrored
    # (B, 3, H, W) uint8: the augmented images before normalisation, when the recipe crops (`crop_padding`); None
    # when flips are the only augmentation and a teacher's outputs are looked up by index and flip
    pixels: Tensor | None = None


@dataclass
class DistillContext:
    """One training of the branch: the student, the task, the recipe (DistillParams, or TeacherParams when the
    CNN teacher itself is trained), the frozen teacher (None: the student alone, on the labels) and the one
    random stream of the run: flips are drawn from it first each step, then whatever the method draws."""

    student: nn.Module
    task: TaskData
    params: Recipe
    device: torch.device
    teacher: Teacher | None = None
    generator: torch.Generator | None = None
    eval_batch_size: int = 256
    precision: str = "fp32"  # runtime.precision: the autocast of forward passes (pipeline/runtime.py)

    def __post_init__(self) -> None:
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.params.seed)

    @functools.cached_property
    def teacher_logits(self) -> Tensor:
        """(2, N, K): the teacher's logits of every training image, as is (0) and mirrored (1). Flips are the
        only augmentation, so one pass per view replaces a teacher forward pass at every step."""
        if self.teacher is None:
            raise RuntimeError("the student alone has no teacher")
        with self.autocast():  # fp32 logits whatever the precision (D.predict returns them as float)
            return training_logits(self.teacher, self.task, self.eval_batch_size, self.device)

    def autocast(self):
        """The context of forward passes and losses: `runtime.precision`'s (none at all in fp32)."""
        return runtime.autocast(self.device, self.precision)

    def teacher_logits_of(self, batch: Batch) -> Tensor:
        """The teacher's logits of the batch: looked up (flips only), or a forward pass on its crops."""
        if batch.pixels is not None:
            with torch.no_grad():
                return self.teacher.logits(batch.pixels)
        return self.teacher_logits[batch.flips.long(), batch.indices].to(self.device)


class DistillMethod:
    """A distillation method: subclasses set `name`, implement `terms` and `weights`, and may add trained
    modules (`added`, e.g. FitNet's adapters: trained with the student, counted as added parameters, not part
    of the saved student), state refreshed each epoch (`on_epoch`, e.g. channel matching), or their own
    `step`. With `ctx.teacher` None a method trains the same student on the labels alone."""

    name: ClassVar[str]  # listed in registry.MODULES

    def __init__(self, ctx: DistillContext):
        self.ctx = ctx
        self.added = nn.ModuleList()

    def weights(self) -> dict[str, float]:
        return {"ce": 1.0}

    def terms(self, batch: Batch) -> Terms:
        raise NotImplementedError

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains: the student's parameters, then the method's added ones."""
        return [*self.ctx.student.parameters(), *self.added.parameters()]

    def added_parameters(self) -> int:
        return sum(p.numel() for p in self.added.parameters())

    def start(self, optimizer: torch.optim.Optimizer, steps: int) -> None:
        """Called once before the first step (the optimiser over `parameters()` exists by then)."""

    def on_epoch(self, epoch: int) -> None:
        """Called before the first step of every epoch (0, 1, ...)."""

    def describe(self) -> dict:
        """What the run's metrics should record of the method's choices (e.g. its rule and sites)."""
        return {}

    def step(self, step: int, batch: Batch, optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One update: the weighted sum of `terms` (computed under `ctx.autocast()`; backward and the optimiser
        step outside it), one optimiser step. A method overriding this runs its own forward passes under
        `ctx.autocast()` too."""
        with self.ctx.autocast():
            terms = self.terms(batch)
        return weighted_step(terms, self.weights(), optimizer, owner=f"method {self.name!r}")
