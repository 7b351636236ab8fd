"""Synthetic stand-ins for what a continual method reads from earlier stages, so a benchmark
(pipeline/tools/bench_gpu.py, bench_seen.py) builds the real methods, through the registry and their
`TaskInputs`, with no data, no stage output and no download: random uint8 tasks with class prompts, a random
caption corpus, and E0's features and prototypes computed here, by the prototypes stage's own function, from a
random-weight model.

`SyntheticOutputs` holds, in memory, what the earlier stages would have written; `synthetic_inputs` builds a
method's inputs from it with the train stage's own assembler (pipeline/continual/assemble.py), so every feature
a method is given (E_{m-1}'s at the start of a task) and computes (the student's at each step) goes through
the code that trains, and the step a benchmark times is the step trained."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch

from pipeline.continual import get_method
from pipeline.continual.assemble import assemble
from pipeline.continual.dual_teacher import PROTOTYPES, earlier_key
from pipeline.continual.inputs import TaskInputs
from pipeline.data import CaptionCorpus, TaskData
from pipeline.data.reference import ReferenceSet
from pipeline.models import clip as clip_lib
from pipeline.params import E0, Params


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
class SyntheticOutputs:
    """The earlier stages' outputs, in memory (the reads of pipeline/continual/assemble.py's `StageOutputs`):
    `e0` (on the CPU) stands for E0 and every earlier model; `stage_outputs` holds, per task in training
    order, what the prototypes stage would have written (`prototypes`, `features`, `text_features`, from
    `pipeline.stages.prototypes.e0_outputs`); each earlier task's carried prototypes are its initial ones;
    `reference` is the caption corpus (and, unpaired, ZSCL's reference set). Arrays are put on `device`."""

    e0: clip_lib.Clip
    stage_outputs: dict[str, dict[str, torch.Tensor]]
    reference_corpus: CaptionCorpus | None = None
    device: torch.device = torch.device("cpu")

    def teacher(self, name: str) -> clip_lib.Clip:
        return copy.deepcopy(self.e0)

    def prototypes_file(self, task: str, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.stage_outputs[task].items() if keys is None or k in keys}

    def e0_image_features(self, task: str) -> torch.Tensor:
        return self.stage_outputs[task]["features"].to(self.device)

    def teacher_image_features(self, name: str, inputs: TaskInputs, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """E_{m-1}'s rows computed here, on the device (the teachers have no checkpoint files to key a disk
        cache by); the same per-step work as in training: an index into cached features."""
        return compute().to(self.device)

    def method_state(self, name: str) -> dict[str, torch.Tensor]:
        if name == E0:
            return {}
        order = list(self.stage_outputs)
        earlier = {earlier_key(n): self.stage_outputs[n]["prototypes"] for n in order[: order.index(name)]}
        return {PROTOTYPES: self.stage_outputs[name]["prototypes"], **earlier}

    def reference(self, oracle: bool, needed_by: str) -> CaptionCorpus | ReferenceSet:
        """The random corpus; as ZSCL's reference set, its images and, unpaired, its captions (the cost is the same)."""
        if oracle:
            return self.reference_corpus
        return ReferenceSet(images=self.reference_corpus.images, captions=list(self.reference_corpus.captions))


def synthetic_inputs(params: Params, method: str, name: str, tasks: dict[str, TaskData], student: clip_lib.Clip,
                     device: torch.device, outputs: SyntheticOutputs) -> TaskInputs:
    """Task `name`'s inputs for continual method `method`, from the synthetic `outputs`."""
    reads = get_method(method).reads(params.loss, first=params.tasks[name].prev == E0)
    return assemble(params, name, tasks, student, device, reads, source=outputs)
