"""The base-class head that LwF and LwM distil over: the class texts of the earlier tasks, as the frozen
teacher E_{m-1} sees them, and the teacher's features of the current task's training images.

In class-incremental learning (LwF, LwM) the base classes are the outputs of the old model. A CLIP model's
classifier is its text features of class prompts, so the old head is E_{m-1}'s text features of the earlier
tasks' classes, and the student's head is its own (live, with gradient) text features of the same prompts.
On the first task there are no earlier tasks; `loss.kd_first_task` decides: `current` distils E0's zero-shot
head on the current task's classes (E0 plays E_{m-1}), `none` drops the term.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.continual.teacher_cache import TeacherRows
from pipeline.data import TaskData
from pipeline.models import clip as clip_lib


@dataclass(frozen=True)
class BaseHead:
    """Teacher side of the base-class logits.

    tasks: the tasks whose classes form the head (C_b classes in all, in task order).
    is_current: the head is the current task's own classes (first task, `kd_first_task: current`), so the
        student's head is the text features it computes for L_ce anyway.
    teacher_text: (C_b, d) teacher text features of the base classes.
    teacher_image: the teacher's features of the current task's training batches (cached per image, or run
        on the batch where images are augmented: pipeline/continual/teacher_cache.py); None where the caller
        computes the teacher's logits itself (LwM, along with its Grad-CAM maps).
    """

    tasks: tuple[TaskData, ...]
    is_current: bool
    teacher_text: torch.Tensor
    teacher_image: TeacherRows | None

    def prompt_groups(self) -> list[list]:
        """What the student's one forward (continual/forward.py) needs for its base-class text features: one
        prompt group per base task (tasks may differ in their number of templates), whose outputs concatenate
        to (C_b, d); none where the base classes are the current task's (its text features serve)."""
        return [] if self.is_current else [[t.prompts()] for t in self.tasks]


def base_head(inputs, teacher: clip_lib.Clip, image: TeacherRows | None) -> BaseHead:
    """The base head of task `inputs.name` (TaskInputs) with `teacher`'s text features: E_{m-1} (frozen), E0
    on the first task (`kd_first_task: current`, E0 plays E_{m-1}). `image`: the teacher's rows of the training
    batches, or None where the caller computes the teacher's logits itself (LwM)."""
    tasks = (inputs.task,) if inputs.first else tuple(inputs.base_tasks)
    with torch.no_grad(), inputs.autocast():  # fp32 whatever the precision (`.float()`: a no-op in fp32)
        text = torch.cat([clip_lib.class_text_features(teacher, t.prompts()) for t in tasks]).float()
    return BaseHead(tasks, inputs.first, text, image)
