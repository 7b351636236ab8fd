"""What a distillation method of the compression branch sees (`DistillContext`), and the branch's side of the
project's one method contract (pipeline/training.py, `Method`): named loss terms per step, weighted by
`weights()`; a method that needs another update (learning-to-learn) overrides `step`, never the loop."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from pipeline.params.compression import Recipe
from pipeline.compression.teachers import Teacher, training_logits
from pipeline.data import TaskData
from pipeline.training import Batch, Inputs, Method

__all__ = ["Batch", "DistillContext", "DistillMethod"]


@dataclass(frozen=True, eq=False)
class DistillContext(Inputs):
    """One training of the branch, the engine's one context type (pipeline/training.py, `Inputs`): the student,
    the task, the recipe (DistillParams, or TeacherParams when the CNN teacher itself is trained), the frozen
    teacher (None: the student alone, on the labels) and the one random stream of the run: flips are drawn
    from it first each step, then whatever the method draws. Frozen: `dataclasses.replace` makes a variant."""

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
            object.__setattr__(self, "generator", torch.Generator().manual_seed(self.params.seed))

    @functools.cached_property
    def teacher_logits(self) -> Tensor:
        """(2, N, K): the teacher's logits of every training image, as is (0) and mirrored (1). Flips are the
        only augmentation, so one pass per view replaces a teacher forward pass at every step."""
        if self.teacher is None:
            raise RuntimeError("the student alone has no teacher")
        with self.autocast():  # fp32 logits whatever the precision (D.predict returns them as float)
            return training_logits(self.teacher, self.task, self.eval_batch_size, self.device)

    def teacher_logits_of(self, batch: Batch) -> Tensor:
        """The teacher's logits of the batch: looked up (flips only), or a forward pass on its crops."""
        if batch.pixels is not None:
            with torch.no_grad():
                return self.teacher.logits(batch.pixels)
        return self.teacher_logits[batch.flips.long(), batch.indices].to(self.device)


class DistillMethod(Method):
    """A distillation method: subclasses set `name`, implement `terms` and `weights`, and may add trained
    modules (`added`, e.g. FitNet's adapters: trained with the student, counted as added parameters, not part
    of the saved student), state refreshed each epoch (`on_epoch`, e.g. channel matching), or their own
    `step`. With `ctx.teacher` None a method trains the same student on the labels alone."""

    name: ClassVar[str]  # listed in registry.MODULES
    # Whether every trained forward of the method goes through `net` (its one module call per step), as several
    # processes need (pipeline/compression/trainer.py refuses the others there): not where the method trains
    # added modules beside the student, forward hooks, or a second update.
    runs_distributed: ClassVar[bool] = False

    def __init__(self, ctx: DistillContext):
        self.ctx = ctx
        self.added = nn.ModuleList()
        # The student's forward: the student itself, or inside DistributedDataParallel (several processes).
        self.net: nn.Module = ctx.student

    def weights(self) -> dict[str, float]:
        return {"ce": 1.0}

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains: the student's parameters, then the method's added ones."""
        return [*self.ctx.student.parameters(), *self.added.parameters()]

    def added_parameters(self) -> int:
        return sum(p.numel() for p in self.added.parameters())

    def train_mode(self) -> None:
        self.ctx.student.to(self.ctx.device).train()
        self.added.to(self.ctx.device).train()

    def eval_mode(self) -> None:
        self.ctx.student.eval()
        self.added.eval()

    def autocast(self):
        return self.ctx.autocast()

    def describe(self) -> dict:
        """What the run's metrics should record of the method's choices (e.g. its rule and sites)."""
        return {}
