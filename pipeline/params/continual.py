"""params.yaml sections of the continual branch: the tasks' data, E0 (model, pretrain), the continual methods'
losses and training, the task chain, evaluation.

Part of the typed-config core (pipeline/params imports these): no torch, no model library, no method."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from pipeline.names import CONTINUAL_METHODS, check_name
from pipeline.sections import Section

E0 = "e0"  # name of the pretrained model in the task chain (`prev` of the first task)


class DataParams(Section):
    # domains: six embedded image domains, a small stand-in for MTIL (default) | facets: the facet world, every
    # image carrying every facet | folder: your images under data.root | mtil: MTIL's torchvision data sets
    # under data.root (pipeline/data/mtil.py)
    benchmark: Literal["domains", "facets", "folder", "mtil"] = "domains"
    # folder benchmark: one sub-directory per task, E0's pretraining set in pretrain/; mtil: torchvision's
    # folders. Always a dependency of prepare and target in dvc.yaml (DVC cannot depend on a null path), so it
    # must exist for every benchmark.
    root: str = Field("images", min_length=1)
    image_size: int = Field(32, ge=16, le=1024)
    train_per_class: int = Field(100, ge=1)
    test_per_class: int = Field(50, ge=1)
    corpus_size: int = Field(20000, ge=1)  # domains, facets: E0's pretraining image-caption pairs
    corpus_per_class: int | None = Field(None, ge=1)  # folder: cap on pretraining images per class
    # domains: E0's corpus phrases captions in the tasks' prompt templates too (CLIP's templates were written to
    # read like its web captions); false: only the domains' own caption forms, never a template's wording
    corpus_templates: bool = False
    # with corpus_templates: false puts only other words for a class in a template's slot, never its name, so E0
    # learns the templates' wording and not the prompts themselves (its zero-shot level stays the names' to earn)
    corpus_template_names: bool = True
    templates: list[str] = ["a photo of a {}."]  # folder: prompt templates
    # folder: pretrain E0 on the tasks' training images too (after <root>/pretrain/, or alone without it).
    # Opt-in: E0 would then have seen every task, so its zero-shot row would not measure zero-shot transfer.
    pretrain_on_tasks: bool = False
    # mtil: k training images per class, drawn with data.seed (the test sets stay whole); null: all of them
    few_shot: int | None = Field(None, ge=1)
    # ZSCL's reference set (pipeline/data/reference.py), every benchmark: generated images of a domain no task
    # comes from (ImageNet's stand-in) and an unpaired caption pool (Conceptual Captions' stand-in)
    reference_images: int = Field(2048, ge=2)
    reference_captions: int = Field(1000, ge=2)
    # training images of each class carved out as the evaluation split, the test split left unwritten: the
    # selection runs' validation data (pipeline/data/validation.py); 0: none, the tasks as built (the default)
    val_per_class: int = Field(0, ge=0)
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
        if Path(self.root).exists() and not Path(self.root).is_dir():
            raise ValueError(f"data.root: {self.root!r} is a file, not a folder")
        if not Path(self.root).is_dir():
            raise ValueError(f"data.root: folder {self.root!r} does not exist")
        if self.benchmark != "folder" and self.pretrain_on_tasks:  # an embedded corpus is generated apart from the tasks, by design
            raise ValueError(f"data.pretrain_on_tasks: applies to the folder benchmark only, not {self.benchmark!r}")
        if self.benchmark != "mtil" and self.few_shot is not None:  # the others have train_per_class
            raise ValueError(f"data.few_shot: applies to the mtil benchmark only, not {self.benchmark!r}")
        return self


class ModelParams(Section):
    arch: str = "synth-rn-tiny"  # open_clip architecture; ours are registered from pipeline/models/configs
    pretrained: str | None = None  # null: pretrain E0 here; else an open_clip tag or a local checkpoint file

    # (checked against open_clip's names by check_library_names)


class PretrainParams(Section):
    steps: int = Field(675, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(50, ge=0)
    seed: int = 0
    # E0 as the exponential moving average of its weights over the steps (decay per step; null: the last
    # step's weights). An average over the last ~1 / (1 - ema) steps lands E0 nearer the same place whatever the
    # seed and CPU (issue: E0's zero-shot spread), at no extra forward or backward.
    ema: float | None = Field(None, gt=0, lt=1)

    @model_validator(mode="after")
    def _warmup(self) -> "PretrainParams":
        return warmup_within(self, "pretrain")


def warmup_within(section, name: str):
    """A warm-up longer than the run never reaches the learning rate it names: refused, not trained."""
    if section.warmup_steps > section.steps:
        raise ValueError(f"{name}.warmup_steps: {section.warmup_steps} is more than {name}.steps {section.steps} "
                         f"(the run would end before its learning rate is reached)")
    return section


class LossParams(Section):
    ce_weight: float = Field(1.0, ge=0)
    con_weight: float = Field(0.2, ge=0)
    dis_weight: float = Field(0.2, ge=0)
    tau: float = Field(0.1, gt=0)  # L_con temperature [choice], chosen on validation; the spec suggests 0.07
    gamma: float = Field(0.99, ge=0, le=1)  # sliding prototype coefficient [choice]
    # Which teachers L_dis distils from on tasks m >= 2: both (the spec), E0 alone, or E_{m-1} alone (an
    # ablation; on the first task E_{m-1} is E0 itself, so every choice is L_dis^E0 there).
    dis_teachers: Literal["both", "e0", "prev"] = "both"
    teacher_weighting: Literal["mean", "adaptive"] = "mean"
    # L_dis rows and columns: "current" is the patent's (this task's class texts and prototypes P_m); "seen"
    # (our extension) distils over the class texts and prototypes P_1..P_m of every task so far, so the
    # text heads of earlier tasks are held too, at one text-tower forward over every seen prompt per step.
    # "seen" is the default: it beat the patent's form on Transfer, Average and Last (README, ablation)
    dis_scope: Literal["current", "seen"] = "seen"
    # seen: L_dis's rows hold this many of the earlier tasks' classes, drawn anew each step (all of this task's),
    # bounding the text tower's cost as classes accumulate; null: every seen class (the default)
    dis_seen_sample: int | None = Field(None, ge=1)
    # dual_teacher: ZSCL's weight ensemble (the running mean of the task's weights every N steps, put in the model
    # at the task's end) on dual-teacher's steps; data-free weight-space ensembling [choice, validation]; 0: off
    dual_ensemble_every: int = Field(0, ge=0)
    adaptive_k: float = Field(6.0, gt=0)  # Select-and-Distill rule, arXiv 2403.09296
    adaptive_b: float = Field(0.2, ge=0)
    label_smoothing: float = Field(0.2, ge=0, lt=1)  # ZSCL trains every method of MTIL with 0.2
    # lwf, lwm, zscl: softmax KD temperature (LwF and ZSCL use 2; T^2 keeps gradients comparable across T)
    kd_temperature: float = Field(2.0, gt=0)
    kd_weight: float = Field(1.0, ge=0)  # lwf: weight of L_kd
    # lwf, lwm on the first task (no earlier classes): distil E0's zero-shot head on the task's own classes,
    # or drop the term
    kd_first_task: Literal["current", "none"] = "current"
    lwm_form: Literal["sigmoid", "bce", "softmax"] = "sigmoid"  # L_D: the paper's sigmoid form, BCE, softmax KD
    lwm_beta: float = Field(1.0, ge=0)  # weight of L_D (the paper gives none; FACIL uses 1)
    lwm_gamma: float = Field(1.0, ge=0)  # weight of L_AD (FACIL: 1)
    # lwm, CNN tower: the ModifiedResNet stage whose output is Grad-CAM's A [choice]. The spec's "last conv
    # map" is layer4, but at 32 px the default E0's layer4 is 1x1, where every map is the same constant.
    lwm_stage: int = Field(3, ge=1, le=4)
    zscl_weight: float = Field(1.0, ge=0)
    # zscl: where the reference batches come from. "reference" (ZSCL as published): images of a generated domain
    # no task comes from, scored against an unpaired caption pool (data/reference). "corpus_oracle": image-caption
    # pairs of E0's own corpus, which covers every task's domain and names the tasks' classes: an oracle that
    # replays the tasks' domains (the form of the tables before the faithful one).
    zscl_reference: Literal["reference", "corpus_oracle"] = "reference"
    zscl_ref_batch: int = Field(64, ge=2)  # reference images (pairs, corpus_oracle) per step (a softmax over 1 is 0)
    # zscl: whose text features of the reference captions the student's reference logits use. "e0": E0's frozen
    # ones, as ZSCL's code (mtil/src/models/finetune.py), so L_zscl trains the image tower only; "student": the
    # student's own, so L_zscl also trains the text tower.
    zscl_text: Literal["e0", "student"] = "e0"
    # weight ensemble every N steps; 0: off. ZSCL's scripts: `--we --avg_freq 100` of `--iterations 1000`, i.e.
    # every tenth of a task's steps: 10 of train.steps 100
    zscl_ensemble_every: int = Field(10, ge=0)
    # zscl: weight of L_l2, the squared distance from the task's starting weights (ZSCL's scripts: --l2 1); 0: off
    zscl_l2: float = Field(1.0, ge=0)
    wise_alpha: float = Field(0.5, ge=0, le=1)  # WiSE-FT: weight of the fine-tuned model


class TrainParams(Section):
    method: str = "dual_teacher"
    steps: int = Field(100, ge=1)  # optimisation steps per task
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    freeze_bn: bool = True  # keep BatchNorm statistics of a CNN image tower as E0 left them
    # open_clip's train-time random resized crop (pipeline/data/augment.py); off as in ZSCL. On, the teachers
    # run on each batch instead of being read from their per-image caches (pipeline/continual/teacher_cache.py).
    augment: bool = False
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return check_name(v, CONTINUAL_METHODS)

    @model_validator(mode="after")
    def _warmup(self) -> "TrainParams":
        return warmup_within(self, "train")


class TaskLink(Section):
    prev: str


class EvalParams(Section):
    batch_size: int = Field(256, ge=1)


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
