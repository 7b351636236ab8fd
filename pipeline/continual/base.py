"""What a continual-learning method sees of a task, and the interface every method implements."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline import checkpoint, io, paths, runtime, training
from pipeline.params import E0, Params
from pipeline.continual.forward import StudentForward
from pipeline.continual.teacher_cache import Rows, TeacherRows, cached_array, digest, images_key, load_array
from pipeline.data import CaptionCorpus, TaskData, load_corpus
from pipeline.data.benchmarks import load_tasks
from pipeline.data.reference import ReferenceSet, load_reference
from pipeline.models import clip as clip_lib


@dataclass(frozen=True)
class TeacherFeatures:
    """A frozen teacher's features of one task: `image(images, indices)` of a training batch (cached rows, or
    the teacher run on the batch where images are augmented: pipeline/continual/teacher_cache.py) and every
    class text (C, d)."""

    image: TeacherRows
    text: torch.Tensor


@dataclass
class TaskContext:
    """Task m: its data, the student (initialised from E_{m-1}) and lazily computed teacher features.

    `all_tasks` (every prepared task by name, as the train stage has them) saves reading the earlier tasks
    again for methods that need them (`base_tasks`); without it they are read from data/tasks on demand."""

    params: Params
    name: str
    task: TaskData
    student: clip_lib.Clip
    device: torch.device
    all_tasks: dict[str, TaskData] | None = None

    @property
    def prev_name(self) -> str:
        return self.params.tasks[self.name].prev

    @property
    def base_names(self) -> list[str]:
        """Names of the tasks before this one, in training order (empty for the first)."""
        names = self.params.task_names
        return names[: names.index(self.name)]

    @functools.cached_property
    def base_tasks(self) -> list[TaskData]:
        """The tasks before this one in training order (empty for the first): their classes are the "base
        classes" that LwF and LwM distil over."""
        before = self.base_names
        known = self.all_tasks or {}
        loaded = load_tasks([n for n in before if n not in known])
        return [known[n] if n in known else loaded[n] for n in before]

    @property
    def seen_tasks(self) -> list[TaskData]:
        """Tasks 1..m: the earlier tasks, then this one."""
        return [*self.base_tasks, self.task]

    def autocast(self):
        """The context of this task's forward passes: `runtime.precision`'s (none at all in fp32)."""
        return runtime.autocast(self.device, self.params.runtime.precision)

    def load_teacher(self, name: str) -> clip_lib.Clip:
        """A frozen copy (eval mode, no gradient) of model `name` (E0 or a task's model) on this device."""
        teacher = clip_lib.freeze(clip_lib.load(paths.model_dir(name)))
        teacher.model.to(self.device)
        return teacher

    @functools.cached_property
    def _from_prototypes_stage(self) -> dict[str, torch.Tensor]:
        """The prototypes stage's file of this task: E0's prototypes and text features, read once."""
        return {k: v.to(self.device) for k, v in io.load_tensors(paths.prototypes_file(self.name)).items()}

    def prototypes_stage_tensor(self, task: str, key: str) -> torch.Tensor:
        """One tensor (`prototypes` or `text_features`) of any task's file of the prototypes stage, on this
        device; only that tensor is read."""
        return io.load_tensors(paths.prototypes_file(task), keys=[key])[key].to(self.device)

    def teacher_image_rows(self, teacher: clip_lib.Clip | None, name: str, cached: Rows | None = None) -> TeacherRows:
        """Teacher `name`'s image features of this task's training batches: with `train.augment`, the teacher
        run on each batch; otherwise rows of `cached` where given (E0's, from the prototypes stage), else of
        the array cached on disk under the digest of the teacher's weights, the images and how they were
        encoded (computed here the first time: one pass of the teacher over the task)."""
        if self.params.train.augment:
            def on_batch(images: torch.Tensor) -> torch.Tensor:
                with self.autocast():
                    return clip_lib.encode_images(teacher, images)

            return TeacherRows(self.device, on_batch=on_batch)
        if cached is None:
            folder = paths.model_dir(name)
            key = digest("image_features", folder / checkpoint.WEIGHTS, folder / checkpoint.META,
                         images_key(self.task.train_images), self.params.runtime.precision, self.params.eval.batch_size)

            def compute() -> torch.Tensor:
                # Kept in fp32 whatever the precision: a cache the steps index.
                with torch.no_grad(), self.autocast():
                    return clip_lib.encode_images_batched(teacher, self.task.train_images, self.params.eval.batch_size,
                                                          progress=f"E_{name} features").float()

            cached = cached_array(key, compute)
        return TeacherRows(self.device, cached=cached)

    @functools.cached_property
    def _e0_image_rows(self) -> TeacherRows:
        """E0's image features come from the prototypes stage, which computes them anyway for the prototypes;
        E0 itself is loaded only where images are augmented."""
        if self.params.train.augment:
            return self.teacher_image_rows(self.load_teacher(E0), E0)
        return self.teacher_image_rows(None, E0, cached=load_array(paths.prototypes_features(self.name)))

    @property
    def e0_features(self) -> TeacherFeatures:
        return TeacherFeatures(image=self._e0_image_rows, text=self._from_prototypes_stage["text_features"])

    @functools.cached_property
    def _prev_teacher(self) -> dict | None:
        """E_{m-1}'s features, from one read of its checkpoint (E_{m-1} is fixed during the task): `image`
        rows of this task's training batches, `text` of this task's classes and, with `loss.dis_scope: seen`,
        `seen_text` of tasks 1..m. None on the first task (E_{m-1} is E0)."""
        if self.prev_name == E0:
            return None
        teacher = self.load_teacher(self.prev_name)
        with torch.no_grad(), self.autocast():
            out = {"image": self.teacher_image_rows(teacher, self.prev_name),
                   "text": clip_lib.class_text_features(teacher, self.task.prompts()).float()}
            if self.params.loss.dis_scope == "seen":
                out["seen_text"] = clip_lib.tasks_class_text_features(teacher, [t.prompts() for t in self.seen_tasks]).float()
        return out

    @property
    def prev_features(self) -> TeacherFeatures | None:
        """E_{m-1}'s features, or None for the first task (where E_{m-1} is E0 itself)."""
        cached = self._prev_teacher
        return None if cached is None else TeacherFeatures(image=cached["image"], text=cached["text"])

    @functools.cached_property
    def seen_e0_text(self) -> torch.Tensor:
        """E0's class text features of tasks 1..m, (sum_k C_k, d), this task's last: from the prototypes
        stage, like `e0_features`."""
        earlier = [self.prototypes_stage_tensor(n, "text_features") for n in self.base_names]
        return torch.cat([*earlier, self.e0_features.text])

    @property
    def seen_prev_text(self) -> torch.Tensor | None:
        """E_{m-1}'s class text features of tasks 1..m, (sum_k C_k, d), this task's last; None on the first
        task. Needs `loss.dis_scope: seen` (computed with `prev_features`, from the same read)."""
        cached = self._prev_teacher
        if cached is None:
            return None
        if "seen_text" not in cached:
            raise RuntimeError("seen_prev_text is computed only with loss.dis_scope: seen")
        return cached["seen_text"]

    @property
    def prototypes(self) -> torch.Tensor:
        """Initial class prototypes from E0 (prototypes stage), (C, d)."""
        return self._from_prototypes_stage["prototypes"]

    def prev_method_state(self) -> dict[str, torch.Tensor]:
        """What the previous task's method saved beside its model (`Method.state`), empty where it saved
        nothing (E0, or a method without state)."""
        path = paths.method_state(self.prev_name)
        return io.load_tensors(path) if path.is_file() else {}

    def load_corpus(self, needed_by: str) -> CaptionCorpus:
        """E0's caption corpus (ZSCL's reference pairs); `needed_by` names the reader if it is empty."""
        return load_corpus(paths.CORPUS, needed_by=needed_by)

    def load_reference(self, needed_by: str) -> ReferenceSet:
        """ZSCL's reference images and unpaired caption pool (data/reference); `needed_by` names the reader."""
        return load_reference(paths.REFERENCE, needed_by=needed_by)

    def student_features(self, images: torch.Tensor, seen: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The student's image features V (B, d) and class text features U (C, d), with gradient. With
        `seen`, U holds the classes of tasks 1..m, (sum_k C_k, d), this task's last: one text-tower forward
        over every seen task's prompts."""
        tasks = self.seen_tasks if seen else [self.task]
        v = clip_lib.encode_images(self.student, images)
        return v, clip_lib.tasks_class_text_features(self.student, [t.prompts() for t in tasks])


class Method(training.Method):
    """A continual-learning method, the continual branch's side of the project's one method contract
    (pipeline/training.py): named loss terms per step on a `Batch` (images, labels, indices), weighted by
    `weights()`; the student's parameters are what the optimiser trains.

    Subclasses set `name`, implement `terms`, and may keep state updated in `after_step` (buffers, not
    parameters: the optimiser only ever sees the student's parameters)."""

    name: ClassVar[str]  # listed in registry.MODULES (and in registry.CORPUS_METHODS if it reads E0's corpus)

    def __init__(self, ctx: TaskContext):
        self.ctx = ctx

    @functools.cached_property
    def student_forward(self) -> torch.nn.Module:
        """The student's one forward per step (pipeline/continual/forward.py): images and prompts in, features
        out. Several processes: the trainer puts it inside DistributedDataParallel (pipeline/distributed.py)."""
        return StudentForward(self.ctx.student)

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


def set_train_mode(model: torch.nn.Module, freeze_bn: bool) -> None:
    """Training mode, except (with `freeze_bn`) BatchNorm layers, which keep using E0's statistics: batch
    statistics of one task's small batches would drift E0's normalisation (a forgetting of its own) and make
    the student differ from E0 at the first step, where L_dis must be 0."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
