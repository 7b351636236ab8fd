"""Typed-config core: one strict, frozen pydantic model mirroring params.yaml.

Every stage calls `Params.load()` first, so a bad value fails before any compute with one line naming the
key (`ParamsError`). Names of benchmarks, methods and architectures are checked here too: methods against the
leaf name lists of pipeline/names.py (no method is imported), tasks against their benchmark, architectures
against open_clip and timm (see LIBRARIES); derived values are properties and never written back.

One module a concern: continual.py (data, E0, losses, training, the task chain), compression.py (target,
teacher, distill, cohort), runtime.py, compare.py (the comparison and selection commands), loading.py (the YAML
reading and its one-line errors); this module joins them into `Params` and checks what spans sections.
"""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError, field_validator, model_validator

from pipeline import paths
from pipeline.names import CORPUS_METHODS
from pipeline.params.compare import CompareParams
from pipeline.params.compression import TOKEN, CohortParams, DistillParams, TargetParams, TeacherParams
from pipeline.params.continual import (E0, DataParams, EvalParams, LossParams, ModelParams, PretrainParams, TaskLink,
                                       TrainParams, task_order)
from pipeline.params.loading import ParamsError, Yaml12Loader, first_error, one_line
from pipeline.params.runtime import RuntimeParams
from pipeline.sections import Section

__all__ = ["LIBRARIES", "E0", "TOKEN", "Params", "ParamsError", "check_library_names", "task_order",
           "DataParams", "ModelParams", "PretrainParams", "LossParams", "TrainParams", "TaskLink", "EvalParams",
           "RuntimeParams", "CompareParams", "TargetParams", "TeacherParams", "DistillParams", "CohortParams"]

# Libraries whose names params.yaml uses: model.arch (open_clip), teacher.arch (timm). Importing one only to
# check a name costs seconds, so a stage checks those of the libraries it imports anyway (stages/common.py);
# `Params.load` and `from_dict` check all unless told otherwise.
LIBRARIES = ("open_clip", "timm")


class Params(Section):
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    tasks: dict[str, TaskLink]
    eval: EvalParams = EvalParams()
    runtime: RuntimeParams = RuntimeParams()
    target: TargetParams = TargetParams()
    teacher: TeacherParams = TeacherParams()
    distill: DistillParams = DistillParams()
    cohort: CohortParams = CohortParams()
    compare: CompareParams = CompareParams()

    @field_validator("tasks")
    @classmethod
    def _chain(cls, tasks: dict[str, TaskLink]) -> dict[str, TaskLink]:
        task_order(tasks)  # raises on gaps, cycles, a wrong first task
        return tasks

    @model_validator(mode="after")
    def _tasks_exist(self) -> "Params":
        from pipeline.data.benchmarks import check_corpus_source, check_task_names

        check_task_names(self.data.benchmark, self.data.root, list(self.tasks))
        if self.target.imbalance != 1 and self.target.benchmark != "facets":
            raise ValueError(f"target.imbalance: applies to target.benchmark facets only, not {self.target.benchmark!r}")
        target_root = self.target.root if self.target.benchmark == "fashion_mnist" else self.data.root
        check_task_names(self.target.benchmark, target_root, [self.target.task], key="target.task")
        check_corpus_source(self.data, self.corpus_needed_by)
        if self.distill.teacher not in ("cnn", E0, *self.tasks):
            raise ValueError(f"distill.teacher: {self.distill.teacher!r} is neither 'cnn' nor a model of the chain "
                             f"({', '.join([E0, *self.tasks])})")
        world = self.runtime.nproc * self.runtime.nodes
        if self.train.batch_size % world:
            raise ValueError(f"runtime.nproc: {self.runtime.nproc} processes on each of runtime.nodes "
                             f"{self.runtime.nodes} cannot share train.batch_size {self.train.batch_size} equally "
                             f"(make it a multiple of {world})")
        patch = self.distill.token.student.patch_size
        if self.distill.student == TOKEN and self.data.image_size % patch:
            raise ValueError(f"distill.token.student.patch_size: {patch} does not divide data.image_size {self.data.image_size}")
        return self

    @property
    def corpus_needed_by(self) -> str | None:
        """The params key and value that reads E0's caption corpus (data/corpus), or None if none does."""
        if self.model.pretrained is None:
            return "model.pretrained: null (E0 pretrained here)"
        if self.train.method in CORPUS_METHODS and self.loss.zscl_reference == "corpus_oracle":  # zscl's oracle form
            return f"train.method: {self.train.method} with loss.zscl_reference: corpus_oracle"
        return None

    def select(self, keys: list[str]) -> dict:
        """The values of `keys` (sections or dotted keys, as a stage lists its params in dvc.yaml) as a
        nested dict: what a checkpoint records of the params that made it, no more (a key its stage does not
        read would change the checkpoint's hash, and so rerun every stage after it, for nothing)."""
        full, out = self.model_dump(mode="json"), {}
        for key in keys:
            *parents, leaf = key.split(".")
            source, target = full, out
            for part in parents:
                source, target = source[part], target.setdefault(part, {})
            target[leaf] = source[leaf]
        return out

    def with_overrides(self, sets: dict[str, object], source: str = "params") -> "Params":
        """These params with dotted keys set (`dvc exp run -S key=value`'s effect), validated again; a key
        params.yaml does not have is one ParamsError naming it and `source`."""
        raw = self.model_dump(mode="json")
        for key, value in sets.items():
            *parents, leaf = key.split(".")
            node = raw
            for part in parents:
                if not isinstance(node.get(part), dict):
                    raise ParamsError(f"{source}: {key!r} is not a key of params.yaml")
                node = node[part]
            if leaf not in node:
                raise ParamsError(f"{source}: {key!r} is not a key of params.yaml")
            node[leaf] = value
        return Params.from_dict(raw, source=source)

    @property
    def task_names(self) -> list[str]:
        """Tasks in training order (following the `prev` links from E0)."""
        return task_order(self.tasks)

    @classmethod
    def load(cls, path: str | Path = paths.PARAMS, libraries: tuple[str, ...] = LIBRARIES) -> "Params":
        """params.yaml, validated; `libraries`: whose names to check too (see check_library_names)."""
        path = Path(path)
        try:
            raw = yaml.load(path.read_text(), Loader=Yaml12Loader)
        except FileNotFoundError:
            raise ParamsError(f"{path}: file not found") from None
        except ParamsError as e:
            raise ParamsError(f"{path}: {e}") from None
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({one_line(e)})") from None
        return cls.from_dict(raw if raw is not None else {}, source=str(path), libraries=libraries)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "params", libraries: tuple[str, ...] = LIBRARIES) -> "Params":
        try:
            params = cls.model_validate(raw)
        except ValidationError as e:
            raise ParamsError(f"{source}: {first_error(e)}") from None
        try:
            check_library_names(params, libraries)
        except ValueError as e:
            raise ParamsError(f"{source}: {e}") from None
        return params


def check_library_names(params: Params, libraries: tuple[str, ...] = LIBRARIES) -> None:
    unknown = set(libraries) - set(LIBRARIES)
    if unknown:
        raise TypeError(f"no name check for libraries {sorted(unknown)}; known: {LIBRARIES}")
    if "open_clip" in libraries:
        from pipeline.models.clip import available_archs

        if params.model.arch not in available_archs():
            raise ValueError(f"model.arch: unknown open_clip architecture {params.model.arch!r}")
    if "timm" in libraries:
        from pipeline.models import cnn

        named = [("teacher.arch", params.teacher.arch), ("distill.student", params.distill.student),
                 *(("cohort.networks", arch) for arch in params.cohort.networks)]
        for key, arch in named:
            if (key == "teacher.arch" or arch != TOKEN) and not cnn.known(arch):
                raise ValueError(f"{key}: unknown CNN {arch!r} (neither a timm nor a torchvision classifier name)")
