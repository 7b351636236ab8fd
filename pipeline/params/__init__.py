"""Typed-config core: one strict, frozen pydantic model mirroring params.yaml.

Every stage calls `Params.load()` first, so a bad value fails before any compute with one line naming the
key (`ParamsError`). Names of benchmarks, methods and architectures are checked here too: methods against the
leaf name lists of pipeline/names.py (no method is imported), tasks against their benchmark, architectures
against open_clip and timm (see LIBRARIES); derived values are properties and never written back.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from pipeline import paths
from pipeline.errors import InputError
from pipeline.names import CONTINUAL_METHODS, CORPUS_METHODS, check_name
from pipeline.params.compression import TOKEN, CohortParams, DistillParams, TargetParams, TeacherParams
from pipeline.sections import Section

E0 = "e0"  # name of the pretrained model in the task chain (`prev` of the first task)

# Libraries whose names params.yaml uses: model.arch (open_clip), teacher.arch (timm). Importing one only to
# check a name costs seconds, so a stage checks those of the libraries it imports anyway (stages/common.py);
# `Params.load` and `from_dict` check all unless told otherwise.
LIBRARIES = ("open_clip", "timm")


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading floats as YAML 1.2 does (DVC reads params.yaml that way, with ruamel):
    `5e-4` is a float, not the string PyYAML's YAML 1.1 makes of it."""


def _unique_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    """A mapping whose keys are unique: PyYAML keeps the last of a duplicated key silently, while DVC (ruamel)
    refuses the whole file as corrupted, after a check here would have passed it."""
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ParamsError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                              f"(first at line {seen[key] + 1})")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_Yaml12Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_keys)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


class ParamsError(InputError):
    """A params.yaml problem, with a message that names the key or path."""


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
    steps: int = Field(900, ge=1)
    batch_size: int = Field(128, ge=2)
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
        return _warmup_within(self, "pretrain")


def _warmup_within(section, name: str):
    """A warm-up longer than the run never reaches the learning rate it names: refused, not trained."""
    if section.warmup_steps > section.steps:
        raise ValueError(f"{name}.warmup_steps: {section.warmup_steps} is more than {name}.steps {section.steps} "
                         f"(the run would end before its learning rate is reached)")
    return section


class LossParams(Section):
    ce_weight: float = Field(1.0, ge=0)
    con_weight: float = Field(0.2, ge=0)
    dis_weight: float = Field(0.2, ge=0)
    tau: float = Field(1.0, gt=0)  # L_con temperature [choice]; the spec suggests 0.07, see README
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
        return _warmup_within(self, "train")


class TaskLink(Section):
    prev: str


class EvalParams(Section):
    batch_size: int = Field(256, ge=1)


class RuntimeParams(Section):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(2, ge=1)
    # DataLoader worker processes decoding images read from disk (pipeline/data/loader.py); 0: in the stage's
    # own process. Batches are the same whatever the count, so it is no DVC param of any stage (dvc.yaml).
    workers: int = Field(0, ge=0)
    # fp32: no autocast at all (the default; CPU outputs byte-identical to a run without this key) | bf16: bf16
    # autocast of forward passes and losses on CUDA, weights and optimiser state fp32 (pipeline/runtime.py)
    precision: Literal["fp32", "bf16"] = "fp32"
    # train@*: processes training each task (one GPU each, or gloo processes on the CPU), started by torchrun;
    # each takes an equal share of every batch (pipeline/distributed.py). 1: one process, no torchrun
    nproc: int = Field(1, ge=1)
    # train@* across several machines (docs/real-scale.md, "Several nodes"): `nodes` of `nproc` processes each,
    # this machine's `node_rank` (0: the one that runs DVC and writes the outputs) and node 0's `host:port`, where
    # torchrun's rendezvous meets. None of them changes an output beyond rounding, so none is a DVC param.
    nodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    rdzv_endpoint: str | None = None

    @model_validator(mode="after")
    def _nodes(self) -> "RuntimeParams":
        if self.node_rank >= self.nodes:
            raise ValueError(f"runtime.node_rank: {self.node_rank} is not below runtime.nodes {self.nodes}")
        if self.nodes > 1:
            host, _, port = (self.rdzv_endpoint or "").rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"runtime.rdzv_endpoint: {self.rdzv_endpoint!r} with runtime.nodes {self.nodes} "
                                 f"must be node 0's host:port (e.g. node0.example.org:29500)")
        return self

    @field_validator("precision")
    @classmethod
    def _bf16_needs_cuda(cls, v: str, info: ValidationInfo) -> str:
        # `auto` is checked where it resolves (runtime.setup): only then is it known whether CUDA is there.
        if v == "bf16" and info.data.get("device") == "cpu":
            raise ValueError("bf16 needs a CUDA device, and runtime.device is 'cpu' (use fp32 on the CPU)")
        return v


Scalar = bool | int | float | str


class CompareParams(Section):
    """`make compare`: every variant (dotted-key overrides of params.yaml) x every seed (`train.seed`).
    Read by pipeline/tools/compare.py only, so no stage reruns when it changes."""

    seeds: list[int] = [0, 1, 2]
    # `make compare` / `make compare-ablation`: the keys each seed sets. The default redraws the tasks' images
    # and E0's corpus (data.seed), E0 (pretrain.seed) and the batch order (train.seed); seed 0 is the default
    # pipeline's run. [train.seed] alone keeps one data draw and one E0 (the tables before they were redrawn).
    seed_keys: list[str] = ["data.seed", "pretrain.seed", "train.seed"]

    @field_validator("seed_keys")
    @classmethod
    def _seed_keys(cls, v: list[str]) -> list[str]:
        known = ("data.seed", "pretrain.seed", "train.seed")
        if not v or "train.seed" not in v or any(k not in known for k in v) or len(set(v)) != len(v):
            raise ValueError(f"must be distinct keys of {list(known)} with train.seed among them, got {v}")
        return v

    jobs: int | None = Field(None, ge=1)  # experiments at once; null: cores // runtime.threads
    # The selection protocol (pipeline/search.py, pipeline/selection.py): task orders by name (each a list of
    # every task of `tasks`, checked when a command uses it), the one hyperparameters are chosen on (with the
    # validation split `search_setting` carves) and the held-out one the reported tables run on.
    orders: dict[str, list[str]] = {}
    selection_order: str | None = None
    held_out_order: str | None = None
    search_setting: dict[str, Scalar] = {"data.val_per_class": 20}  # under every search run
    search_metric: Literal["transfer", "average", "last"] = "average"  # mean over seeds of this validation metric
    # per compare.variants entry: dotted key -> the values tried (their grid: every combination)
    search: dict[str, dict[str, list[Scalar]]] = {}
    variants: dict[str, dict[str, Scalar]] = {"finetune": {"train.method": "finetune"}, "dual_teacher": {}}
    ablation_variants: dict[str, dict[str, Scalar]] = {}  # `make compare-ablation`: variants of dual_teacher
    distill_variants: dict[str, dict[str, Scalar | None]] = {}  # `make compare-distill`; seeds set distill.seed
    # `make compare-distill`: overrides every distill variant starts from (its benchmark: target, teacher, budget)
    distill_setting: dict[str, Scalar | None] = {}
    token_variants: dict[str, dict[str, Scalar | None]] = {"soft": {}}  # `make compare-token`
    cohort_variants: dict[str, dict[str, Scalar | None]] = {}  # `make compare-cohort`; seeds set cohort.seed
    cohort_setting: dict[str, Scalar | None] = {}  # overrides every cohort variant starts from
    # `make room` (pipeline/room.py): the target and recipes the room probe runs, over each branch's setting; the
    # tables on that target take the same keys as `--set` (`python -m pipeline.tools.room --commands` prints them)
    room_setting: dict[str, Scalar | None] = {}


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
            raw = yaml.load(path.read_text(), Loader=_Yaml12Loader)
        except FileNotFoundError:
            raise ParamsError(f"{path}: file not found") from None
        except ParamsError as e:
            raise ParamsError(f"{path}: {e}") from None
        except yaml.YAMLError as e:
            raise ParamsError(f"{path}: not valid YAML ({_one_line(e)})") from None
        return cls.from_dict(raw if raw is not None else {}, source=str(path), libraries=libraries)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "params", libraries: tuple[str, ...] = LIBRARIES) -> "Params":
        try:
            params = cls.model_validate(raw)
        except ValidationError as e:
            raise ParamsError(f"{source}: {_first_error(e)}") from None
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


def _one_line(e: yaml.YAMLError) -> str:
    """PyYAML's error, which spans several lines (the problem, a quoted excerpt, a caret), in one line."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
        mark = e.problem_mark
        return f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}" + (f" {e.context}" if e.context else "")
    return " ".join(str(e).split())


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
