"""Typed-config core: one strict, frozen pydantic model mirroring params.yaml.

Every stage calls `Params.load()` first, so a bad value fails before any compute with one line naming the
key (`ParamsError`). Names of benchmarks, methods and architectures are checked against their registries
here too; derived values are properties and never written back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline import paths

E0 = "e0"  # name of the pretrained model in the task chain (`prev` of the first task)


class ParamsError(ValueError):
    """A params.yaml problem, with a message that names the key or path."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DataParams(Section):
    benchmark: Literal["synthetic", "folder"] = "synthetic"
    root: str | None = None  # folder benchmark: directory with one sub-directory per task
    image_size: int = Field(32, ge=16, le=1024)
    train_per_class: int = Field(100, ge=1)
    test_per_class: int = Field(50, ge=1)
    corpus_size: int = Field(20000, ge=1)  # synthetic pretraining captions
    corpus_per_class: int | None = Field(None, ge=1)  # folder: cap on pretraining images per class
    templates: list[str] = ["a photo of a {}."]  # folder: prompt templates
    seed: int = 0

    @field_validator("templates")
    @classmethod
    def _one_slot(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}'")
        if not v:
            raise ValueError("needs at least one template")
        return v

    @model_validator(mode="after")
    def _root_for_folder(self) -> "DataParams":
        if self.benchmark == "folder":
            if self.root is None:
                raise ValueError("benchmark 'folder' needs data.root")
            if not Path(self.root).is_dir():
                raise ValueError(f"data.root: folder {self.root!r} does not exist")
        return self


class ModelParams(Section):
    arch: str = "synth-rn-tiny"  # open_clip architecture; ours are registered from pipeline/models/configs
    pretrained: str | None = None  # null: pretrain E0 here; else an open_clip tag or a local checkpoint file

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from pipeline.models.clip import available_archs  # lazy: open_clip import is slow

        if v not in available_archs():
            raise ValueError(f"unknown open_clip architecture {v!r}")
        return v


class PretrainParams(Section):
    steps: int = Field(900, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(50, ge=0)
    seed: int = 0


class LossParams(Section):
    ce_weight: float = Field(1.0, ge=0)
    con_weight: float = Field(0.2, ge=0)
    dis_weight: float = Field(0.2, ge=0)
    tau: float = Field(1.0, gt=0)  # L_con temperature [choice]; the spec suggests 0.07, see README
    gamma: float = Field(0.99, ge=0, le=1)  # sliding prototype coefficient [choice]
    teacher_weighting: Literal["mean", "adaptive"] = "mean"
    adaptive_k: float = Field(6.0, gt=0)  # Select-and-Distill rule, arXiv 2403.09296
    adaptive_b: float = Field(0.2, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class TrainParams(Section):
    method: str = "dual_teacher"
    steps: int = Field(100, ge=1)  # optimisation steps per task
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    freeze_bn: bool = True  # keep BatchNorm statistics of a CNN image tower as E0 left them
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from pipeline.continual import METHODS

        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; known: {', '.join(sorted(METHODS))}")
        return v


class TaskLink(Section):
    prev: str


class EvalParams(Section):
    batch_size: int = Field(256, ge=1)


class RuntimeParams(Section):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(2, ge=1)


Scalar = bool | int | float | str


class CompareParams(Section):
    """`make compare`: every variant (dotted-key overrides of params.yaml) x every seed (`train.seed`).
    Read by pipeline/compare.py only, so no stage reruns when it changes."""

    seeds: list[int] = [0, 1, 2]
    variants: dict[str, dict[str, Scalar]] = {"finetune": {"train.method": "finetune"}, "dual_teacher": {}}


class Params(Section):
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    pretrain: PretrainParams = PretrainParams()
    loss: LossParams = LossParams()
    train: TrainParams = TrainParams()
    tasks: dict[str, TaskLink]
    eval: EvalParams = EvalParams()
    runtime: RuntimeParams = RuntimeParams()
    compare: CompareParams = CompareParams()

    @field_validator("tasks")
    @classmethod
    def _chain(cls, tasks: dict[str, TaskLink]) -> dict[str, TaskLink]:
        task_order(tasks)  # raises on gaps, cycles, a wrong first task
        return tasks

    @model_validator(mode="after")
    def _tasks_exist(self) -> "Params":
        from pipeline.data.benchmarks import check_task_names

        check_task_names(self.data.benchmark, self.data.root, list(self.tasks))
        return self

    @property
    def task_names(self) -> list[str]:
        """Tasks in training order (following the `prev` links from E0)."""
        return task_order(self.tasks)

    @classmethod
    def load(cls, path: str | Path = paths.PARAMS) -> "Params":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ParamsError(f"{path}: file not found") from None
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({e})") from None
        return cls.from_dict(raw if raw is not None else {}, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "params") -> "Params":
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ParamsError(f"{source}: {_first_error(e)}") from None


def task_order(tasks: dict[str, TaskLink]) -> list[str]:
    """Follow `prev` links from E0; every task must be reached exactly once."""
    if not tasks:
        raise ValueError("at least one task is needed")
    if E0 in tasks:
        raise ValueError(f"'{E0}' names the pretrained model and cannot be a task")
    by_prev: dict[str, str] = {}
    for name, link in tasks.items():
        if link.prev != E0 and link.prev not in tasks:
            raise ValueError(f"{name}.prev: {link.prev!r} is neither '{E0}' nor a task")
        if link.prev in by_prev:
            raise ValueError(f"{name}.prev: tasks {by_prev[link.prev]!r} and {name!r} both follow {link.prev!r}")
        by_prev[link.prev] = name
    if E0 not in by_prev:
        raise ValueError(f"no task starts from '{E0}' (the first task's prev must be '{E0}')")
    order, current = [], E0
    while current in by_prev:
        current = by_prev[current]
        order.append(current)
    missing = [t for t in tasks if t not in order]
    if missing:
        raise ValueError(f"{missing[0]}.prev: task is not reachable from '{E0}' (a cycle?)")
    return order


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "missing key"
    more = f" (+{len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
    return f"{key}: {msg}{more}" if key else f"{msg}{more}"
