"""The interface every continual-learning method implements: it is given its task's `TaskInputs`
(pipeline/continual/inputs.py: frozen values, built by the train stage through pipeline/continual/assemble.py,
or in memory) and names in `reads` which optional inputs it uses."""
from __future__ import annotations

import functools
from typing import ClassVar

import torch

from pipeline import training
from pipeline.continual.forward import StudentForward
from pipeline.continual.inputs import TaskInputs
from pipeline.params import LossParams


class Method(training.Method):
    """A continual-learning method, the continual branch's side of the project's one method contract
    (pipeline/training.py): named loss terms per step on a `Batch` (images, labels, indices), weighted by
    `weights()`; the student's parameters are what the optimiser trains.

    Subclasses set `name`, implement `terms`, and may keep state updated in `after_step` (buffers, not
    parameters: the optimiser only ever sees the student's parameters)."""

    name: ClassVar[str]  # listed in registry.MODULES (and in registry.CORPUS_METHODS if it reads E0's corpus)

    @classmethod
    def reads(cls, loss: LossParams, first: bool) -> frozenset[str]:
        """The optional inputs (TaskInputs' keyword-only fields) this method uses with the `loss` section, on the
        first task of the chain or a later one: the stage assembles these and nothing else (no teacher pass, no
        file read, for a method that does not use them)."""
        return frozenset()

    def __init__(self, ctx: TaskInputs):
        missing = self.reads(ctx.params.loss, ctx.first) - ctx.assembled
        if missing:
            raise ValueError(f"{self.name}: its inputs lack {sorted(missing)} (see {type(self).__name__}.reads)")
        self.ctx = ctx

    def weights(self) -> dict[str, float]:
        return {"ce": self.ctx.params.loss.ce_weight}

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.ctx.student.model.parameters())

    def train_mode(self) -> None:
        """Training mode (BatchNorm as `train.freeze_bn` says) with the logit scale frozen (ZSCL)."""
        model = self.ctx.student.model
        set_train_mode(model, self.ctx.params.train.freeze_bn)
        model.logit_scale.requires_grad_(False)

    def eval_mode(self) -> None:
        self.ctx.student.model.eval()

    def autocast(self):
        return self.ctx.autocast()

    @functools.cached_property
    def student_forward(self) -> torch.nn.Module:
        """The student's one forward per step (pipeline/continual/forward.py): images and prompts in, features
        out. Several processes: the trainer puts it inside DistributedDataParallel (pipeline/distributed.py)."""
        return StudentForward(self.ctx.student)


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Training mode, except (with `freeze_bn`) BatchNorm layers, which keep using E0's statistics: batch
    statistics of one task's small batches would drift E0's normalisation (a forgetting of its own) and make
    the student differ from E0 at the first step, where L_dis must be 0."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
