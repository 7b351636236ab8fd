"""Synthetic stand-ins for what a continual method reads from earlier stages, so a benchmark
(pipeline/tools/bench_gpu.py) builds the real methods, through the registry and a TaskContext, with no data, no
stage output and no download: random uint8 tasks with class prompts, a random caption corpus, and E0's
features and prototypes computed here, by the prototypes stage's own function, from a random-weight model.

`SyntheticContext` is a TaskContext whose disk reads are replaced, nothing else: the three reads of the
prototypes stage's files, the teacher checkpoints, the previous task's method state and the corpus. Every
feature a method computes itself (E_{m-1}'s features at the start of a task, the student's at each step)
goes through TaskContext's own code, so the step a benchmark times is the step trained."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

import torch

from pipeline.params import E0
from pipeline.continual.base import TaskContext
from pipeline.continual.dual_teacher import PROTOTYPES, earlier_key
from pipeline.continual.teacher_cache import TeacherRows
from pipeline.data import CaptionCorpus, TaskData
from pipeline.data.reference import ReferenceSet
from pipeline.models import clip as clip_lib


def synthetic_task(name: str, classes: int, images: int, image_size: int, templates: list[str],
                   generator: torch.Generator) -> TaskData:
    """`images` random training images (at least one per class, labels cycling through the classes), one test
    image, `classes` class texts and the given prompt templates."""
    n = max(images, classes)
    return TaskData(
        name=name, classes=[f"{name} class {c}" for c in range(classes)], templates=list(templates),
        train_images=torch.randint(0, 256, (n, 3, image_size, image_size), dtype=torch.uint8, generator=generator),
        train_labels=torch.arange(n) % classes,
        test_images=torch.zeros(1, 3, image_size, image_size, dtype=torch.uint8), test_labels=torch.zeros(1, dtype=torch.int64),
    )


def synthetic_corpus(pairs: int, image_size: int, generator: torch.Generator) -> CaptionCorpus:
    """`pairs` random images, each with its own caption."""
    images = torch.randint(0, 256, (pairs, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    return CaptionCorpus(images=images, captions=[f"a photo of synthetic scene number {i}." for i in range(pairs)])


@dataclass
class SyntheticContext(TaskContext):
    """A TaskContext over synthetic data: `e0` (on the CPU) stands for E0 and every earlier model, each
    teacher a frozen copy of it on the device; `stage_outputs` holds, per task, what the prototypes stage
    would have written (`prototypes`, `features`, `text_features`, from `pipeline.stages.prototypes.e0_outputs`);
    each earlier task's carried prototypes are its initial ones; `reference` is the caption corpus."""

    e0: clip_lib.Clip | None = None
    stage_outputs: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    reference: CaptionCorpus | None = None

    def load_teacher(self, name: str) -> clip_lib.Clip:
        teacher = clip_lib.freeze(copy.deepcopy(self.e0))
        teacher.model.to(self.device)
        return teacher

    @functools.cached_property
    def _from_prototypes_stage(self) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in self.stage_outputs[self.name].items()}

    def prototypes_stage_tensor(self, task: str, key: str) -> torch.Tensor:
        return self.stage_outputs[task][key].to(self.device)

    @functools.cached_property
    def _e0_image_rows(self) -> TeacherRows:
        if self.params.train.augment:
            return self.teacher_image_rows(self.load_teacher(E0), E0)
        return TeacherRows(self.device, cached=self.stage_outputs[self.name]["features"].to(self.device))

    def teacher_image_rows(self, teacher, name, cached=None) -> TeacherRows:
        """E_{m-1}'s rows computed here, on the device (the teachers have no checkpoint files to key a disk
        cache by); the same per-step work as in training: an index into cached features."""
        if self.params.train.augment or cached is not None:
            return super().teacher_image_rows(teacher, name, cached)
        with torch.no_grad(), self.autocast():
            features = clip_lib.encode_images_batched(teacher, self.task.train_images, self.params.eval.batch_size).float()
        return TeacherRows(self.device, cached=features.to(self.device))

    def prev_method_state(self) -> dict[str, torch.Tensor]:
        if self.prev_name == E0:
            return {}
        earlier = {earlier_key(n): self.stage_outputs[n]["prototypes"] for n in self.base_names[:-1]}
        return {PROTOTYPES: self.stage_outputs[self.prev_name]["prototypes"], **earlier}

    def load_corpus(self, needed_by: str) -> CaptionCorpus:
        return self.reference

    def load_reference(self, needed_by: str) -> ReferenceSet:
        """ZSCL's reference set: the random corpus's images and, unpaired, its captions (the cost is the same)."""
        return ReferenceSet(images=self.reference.images, captions=list(self.reference.captions))
