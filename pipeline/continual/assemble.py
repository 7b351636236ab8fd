"""The train stage's reads for a continual method: `assemble` builds task m's `TaskInputs` from the earlier
stages' outputs. The one continual module that reads them (methods read their inputs, never a file, never
Params): `StageOutputs` reads the prototypes stage's files (E0's prototypes, text and image features), the
teacher checkpoints (models/<task>), the feature cache of E_{m-1} (pipeline/continual/teacher_cache.py), the
previous task's method state, E0's caption corpus and the reference set. Only the inputs the method names
(`Method.reads`) are built, so a method pays for no read and no teacher pass it does not use.

A synthetic benchmark (pipeline/tools/bench_synthetic.py) passes outputs of its own, held in memory, with
`StageOutputs`' five reads: the inputs are then built by the same code as in training."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch

from pipeline import checkpoint, io, paths
from pipeline.continual.base_head import BaseHead, base_head
from pipeline.continual.inputs import INPUTS, TaskInputs, TaskRecipe, TeacherFeatures
from pipeline.continual.teacher_cache import Rows, TeacherRows, cached_array, digest, images_key, load_array
from pipeline.data import CaptionCorpus, TaskData, load_corpus
from pipeline.data.benchmarks import load_tasks
from pipeline.data.reference import ReferenceSet, load_reference
from pipeline.models import clip as clip_lib
from pipeline.params import E0, Params

# The order inputs are built in: E0's files first, then the teachers (E_{m-1} loaded once for all its inputs).
ORDER = ("prototypes", "prev_state", "earlier_prototypes", "e0_features", "prev_features", "seen_e0_text",
         "seen_prev_text", "base_head", "prev_teacher", "e0_teacher", "reference")


class StageOutputs:
    """What the earlier stages wrote, as the inputs need it (the train stage's source of them)."""

    def teacher(self, name: str) -> clip_lib.Clip:
        """Model `name` (E0 or a task's model), as saved."""
        return clip_lib.load(paths.model_dir(name))

    def prototypes_file(self, task: str, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
        """The prototypes stage's file of `task` (E0's `prototypes` and `text_features`): `keys` of it, or all."""
        return io.load_tensors(paths.prototypes_file(task), keys=keys)

    def e0_image_features(self, task: str) -> Rows:
        """E0's features of every training image of `task`, cached by the prototypes stage (memory-mapped)."""
        return load_array(paths.prototypes_features(task))

    def teacher_image_features(self, name: str, inputs: TaskInputs, compute: Callable[[], torch.Tensor]) -> Rows:
        """Teacher `name`'s features of every training image of the task: the array cached on disk under the
        digest of the teacher's weights, the images and how they were encoded (`compute()`d the first time)."""
        folder = paths.model_dir(name)
        key = digest("image_features", folder / checkpoint.WEIGHTS, folder / checkpoint.META,
                     images_key(inputs.task.train_images), inputs.precision, inputs.params.eval.batch_size)
        return cached_array(key, compute)

    def method_state(self, name: str) -> dict[str, torch.Tensor]:
        """What task `name`'s method saved beside its model (`Method.state`), empty where it saved nothing."""
        path = paths.method_state(name)
        return io.load_tensors(path) if path.is_file() else {}

    def reference(self, oracle: bool, needed_by: str) -> ReferenceSet | CaptionCorpus:
        """ZSCL's reference set (data/reference), or with `oracle` E0's caption corpus; an empty one is an
        error naming `needed_by`."""
        if oracle:
            return load_corpus(paths.CORPUS, needed_by=needed_by)
        return load_reference(paths.REFERENCE, needed_by=needed_by)


def assemble(params: Params, name: str, tasks: dict[str, TaskData], student: clip_lib.Clip, device: torch.device,
             reads: frozenset[str] | set[str], source: StageOutputs | None = None) -> TaskInputs:
    """Task `name`'s inputs with the optional ones named in `reads` (`Method.reads(params.loss, first)`), from
    `source` (the stages' files by default). `tasks` holds the prepared tasks by name (as the train stage has
    them); an earlier task missing from it is read from data/tasks."""
    unknown = set(reads) - INPUTS
    if unknown:
        raise KeyError(f"no such continual input: {sorted(unknown)} (TaskInputs has {sorted(INPUTS)})")
    names = params.task_names
    before = names[: names.index(name)]
    loaded = load_tasks([n for n in before if n not in tasks])
    core = TaskInputs(
        name=name, prev_name=params.tasks[name].prev, task=tasks[name],
        base_tasks=tuple(tasks[n] if n in tasks else loaded[n] for n in before), student=student,
        params=TaskRecipe(loss=params.loss, train=params.train, eval=params.eval), device=device,
        precision=params.runtime.precision,
    )
    reader = _Reader(core, params.train.method, source or StageOutputs())
    return dataclasses.replace(core, **{key: getattr(reader, key)() for key in ORDER if key in reads})


class _Reader:
    """One method per input, read from `source` (and computed where a teacher runs) for the task of `inputs`."""

    def __init__(self, inputs: TaskInputs, method: str, source: StageOutputs):
        self.inputs, self.method, self.source = inputs, method, source
        self.augment = inputs.params.train.augment

    def load_teacher(self, name: str) -> clip_lib.Clip:
        """A frozen copy (eval mode, no gradient) of model `name` (E0 or a task's model) on the device."""
        teacher = clip_lib.freeze(self.source.teacher(name))
        teacher.model.to(self.inputs.device)
        return teacher

    @functools.cached_property
    def prev_model(self) -> clip_lib.Clip:
        """E_{m-1}, read once for every input of it (fixed during the task)."""
        return self.load_teacher(self.inputs.prev_name)

    @functools.cached_property
    def own_stage_file(self) -> dict[str, torch.Tensor]:
        """The prototypes stage's file of this task: E0's prototypes and text features, read once."""
        return {k: v.to(self.inputs.device) for k, v in self.source.prototypes_file(self.inputs.name).items()}

    def stage_tensor(self, task: str, key: str) -> torch.Tensor:
        """One tensor (`prototypes` or `text_features`) of any task's file of the prototypes stage, on the
        device; only that tensor is read."""
        return self.source.prototypes_file(task, keys=[key])[key].to(self.inputs.device)

    def teacher_image_rows(self, teacher: clip_lib.Clip | None, name: str, cached: Rows | None = None) -> TeacherRows:
        """Teacher `name`'s image features of this task's training batches: with `train.augment`, the teacher
        run on each batch; otherwise rows of `cached` where given (E0's, from the prototypes stage), else of
        the source's array of the teacher's features (`StageOutputs`: cached on disk, computed here the first
        time: one pass of the teacher over the task)."""
        inputs = self.inputs
        if self.augment:
            def on_batch(images: torch.Tensor) -> torch.Tensor:
                with inputs.autocast():
                    return clip_lib.encode_images(teacher, images)

            return TeacherRows(inputs.device, on_batch=on_batch)
        if cached is None:
            def compute() -> torch.Tensor:
                # Kept in fp32 whatever the precision: a cache the steps index.
                with torch.no_grad(), inputs.autocast():
                    return clip_lib.encode_images_batched(teacher, inputs.task.train_images, inputs.params.eval.batch_size,
                                                          progress=f"E_{name} features").float()

            cached = self.source.teacher_image_features(name, inputs, compute)
        return TeacherRows(inputs.device, cached=cached)

    # ------------------------------------------------------------------ the inputs (TaskInputs' fields)
    def prototypes(self) -> torch.Tensor:
        return self.own_stage_file["prototypes"]

    def prev_state(self) -> dict[str, torch.Tensor]:
        return self.source.method_state(self.inputs.prev_name)

    def earlier_prototypes(self) -> dict[str, torch.Tensor]:
        return {n: self.stage_tensor(n, "prototypes") for n in self.inputs.base_names}

    def e0_features(self) -> TeacherFeatures:
        return self._e0_features

    @functools.cached_property
    def _e0_features(self) -> TeacherFeatures:
        """E0's image features come from the prototypes stage, which computes them anyway for the prototypes;
        E0 itself is loaded only where images are augmented."""
        if self.augment:
            rows = self.teacher_image_rows(self.load_teacher(E0), E0)
        else:
            rows = self.teacher_image_rows(None, E0, cached=self.source.e0_image_features(self.inputs.name))
        return TeacherFeatures(image=rows, text=self.own_stage_file["text_features"])

    def prev_features(self) -> TeacherFeatures | None:
        if self.inputs.first:
            return None
        teacher, task = self.prev_model, self.inputs.task
        with torch.no_grad(), self.inputs.autocast():
            return TeacherFeatures(image=self.teacher_image_rows(teacher, self.inputs.prev_name),
                                   text=clip_lib.class_text_features(teacher, task.prompts()).float())

    def seen_e0_text(self) -> torch.Tensor:
        earlier = [self.stage_tensor(n, "text_features") for n in self.inputs.base_names]
        return torch.cat([*earlier, self.own_stage_file["text_features"]])

    def seen_prev_text(self) -> torch.Tensor | None:
        if self.inputs.first:
            return None
        with torch.no_grad(), self.inputs.autocast():
            return clip_lib.tasks_class_text_features(self.prev_model, [t.prompts() for t in self.inputs.seen_tasks]).float()

    def base_head(self) -> BaseHead | None:
        """On the first task E0's features come from the prototypes stage, without any model."""
        inputs = self.inputs
        if inputs.first:
            if inputs.params.loss.kd_first_task == "none":
                return None
            e0 = self.e0_features()
            return BaseHead((inputs.task,), True, e0.text, e0.image)
        head = base_head(inputs, self.prev_model, image=None)
        return dataclasses.replace(head, teacher_image=self.teacher_image_rows(self.prev_model, inputs.prev_name))

    def prev_teacher(self) -> clip_lib.Clip:
        return self.prev_model

    def e0_teacher(self) -> clip_lib.Clip:
        return self.load_teacher(E0)

    def reference(self) -> ReferenceSet | CaptionCorpus:
        """ZSCL's reference data; a corpus or set found empty names the reader."""
        if self.inputs.params.loss.zscl_reference == "corpus_oracle":
            return self.source.reference(True, f"train.method: {self.method} with loss.zscl_reference: corpus_oracle")
        return self.source.reference(False, f"train.method: {self.method}")
