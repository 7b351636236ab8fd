"""What a continual-learning method is given for task m: `TaskInputs`, frozen values built by the train stage
(pipeline/continual/assemble.py reads them from the earlier stages' outputs) or in memory (a test, a synthetic
benchmark: pipeline/tools/bench_synthetic.py). Nothing here reads a file.

Every task's inputs hold the task, the earlier tasks, the student (initialised from E_{m-1}), the recipe sections
a method reads and the device and precision. The others (E0's and E_{m-1}'s features, carried state, frozen
teachers, the reference set) are assembled only for a method whose `reads` names them, so a method pays for
nothing it does not use; one it did not name is `NotAssembled`, which fails at its first use."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from pipeline import training
from pipeline.continual.base_head import BaseHead
from pipeline.continual.teacher_cache import TeacherRows
from pipeline.data import CaptionCorpus, TaskData
from pipeline.data.reference import ReferenceSet
from pipeline.models import clip as clip_lib
from pipeline.params import E0, EvalParams, LossParams, TrainParams


@dataclass(frozen=True)
class TeacherFeatures:
    """A frozen teacher's features of one task: `image(images, indices)` of a training batch (cached rows, or
    the teacher run on the batch where images are augmented: pipeline/continual/teacher_cache.py) and every
    class text (C, d)."""

    image: TeacherRows
    text: torch.Tensor


@dataclass(frozen=True)
class TaskRecipe:
    """The params sections a continual method reads (not the whole Params): `loss`, `train` and `eval`
    (LwM's teacher pass runs in batches of eval.batch_size)."""

    loss: LossParams
    train: TrainParams
    eval: EvalParams


class NotAssembled:
    """Stands for an input the method did not name in its `reads`: any use of it raises, naming the input (a
    method that forgot one fails at once instead of reading None as "no teacher")."""

    def __init__(self, name: str):
        self._name = name

    def _fail(self, *_args, **_kw):
        raise AttributeError(f"TaskInputs.{self._name} was not assembled: the method's reads() must name it")

    def __getattr__(self, attr: str):
        if attr.startswith("__") or attr == "_name":  # copy/pickle probing, or not yet initialised
            raise AttributeError(attr)
        self._fail()

    __getitem__ = __iter__ = __len__ = __bool__ = __call__ = _fail

    def __repr__(self) -> str:
        return f"NotAssembled({self._name!r})"


_UNSET: Any = object()  # the default of every input: replaced by NotAssembled(name) once built


def _optional() -> Any:
    return dataclasses.field(default=_UNSET, kw_only=True)


@dataclass(frozen=True, eq=False)
class TaskInputs(training.Inputs):
    """Task `name`: its data, the tasks before it in training order (`base_tasks`, the "base classes" LwF and
    LwM distil over), the student, the recipe, and what the method reads (`Method.reads`):

    e0_features: E0's image rows of this task's training batches and its class text (C, d).
    prototypes: E0's initial class prototypes of this task, (C, d).
    seen_e0_text: E0's class text of tasks 1..m, (sum_k C_k, d), this task's last.
    prev_features: E_{m-1}'s features of this task; None on the first task (E_{m-1} is E0 itself).
    seen_prev_text: E_{m-1}'s class text of tasks 1..m; None on the first task.
    prev_state: what the previous task's method saved beside its model (`Method.state`); empty where nothing.
    earlier_prototypes: E0's initial prototypes of each earlier task, by name, in training order.
    base_head: the teacher side of the base-class logits (base_head.py); None on the first task with
        `loss.kd_first_task: none`.
    prev_teacher: E_{m-1} itself, frozen, on the device (E0 on the first task).
    e0_teacher: E0 itself, frozen, on the device.
    reference: ZSCL's reference data: the reference set (`loss.zscl_reference: reference`) or E0's caption
        corpus (`corpus_oracle`).
    """

    name: str
    prev_name: str
    task: TaskData
    base_tasks: tuple[TaskData, ...]
    student: clip_lib.Clip
    params: TaskRecipe
    device: torch.device
    precision: str = "fp32"  # runtime.precision: the autocast of forward passes (pipeline/runtime.py)
    e0_features: TeacherFeatures = _optional()
    prototypes: torch.Tensor = _optional()
    seen_e0_text: torch.Tensor = _optional()
    prev_features: TeacherFeatures | None = _optional()
    seen_prev_text: torch.Tensor | None = _optional()
    prev_state: dict[str, torch.Tensor] = _optional()
    earlier_prototypes: dict[str, torch.Tensor] = _optional()
    base_head: BaseHead | None = _optional()
    prev_teacher: clip_lib.Clip = _optional()
    e0_teacher: clip_lib.Clip = _optional()
    reference: ReferenceSet | CaptionCorpus = _optional()

    def __post_init__(self) -> None:
        for name in INPUTS:
            if getattr(self, name) is _UNSET:
                object.__setattr__(self, name, NotAssembled(name))

    @property
    def assembled(self) -> frozenset[str]:
        """The inputs given (a method's `reads`, where the stage built them)."""
        return frozenset(n for n in INPUTS if not isinstance(getattr(self, n), NotAssembled))

    @property
    def first(self) -> bool:
        """The first task of the chain: E_{m-1} is E0."""
        return self.prev_name == E0

    @property
    def base_names(self) -> list[str]:
        """Names of the tasks before this one, in training order (empty for the first)."""
        return [t.name for t in self.base_tasks]

    @property
    def seen_tasks(self) -> list[TaskData]:
        """Tasks 1..m: the earlier tasks, then this one."""
        return [*self.base_tasks, self.task]


# The inputs a method may name in `reads` (the keyword-only fields).
INPUTS = frozenset(f.name for f in dataclasses.fields(TaskInputs) if f.kw_only)
