"""params.yaml sections of the compression branch: target task -> CNN teacher -> student (stage `distill`, the
method `distill.method`) and the same student on the labels alone (stage `student_alone`).

Part of the typed-config core (pipeline/params imports these): no torch, no model library, no method."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.names import DISTILL_METHODS, FEATURE_METHODS, ONLINE_METHODS, check_name
from pipeline.sections import Section

TOKEN = "token"  # distill.student: the distillation-token student (distill.token.student)


class TargetParams(Section):
    """The classification task the compression branch trains on (stage `target`)."""

    # The target's own benchmark, apart from the continual chain's data.benchmark: the default is the facet
    # world's joint task 'count+colour' (28 similar classes, the garbage-sorting use case); a domain
    # ('flowers') or a folder task under data.root work too; fashion_mnist: real photographs (its one task,
    # 'fashion_mnist', under target.root; pipeline/data/fashion_mnist.py).
    benchmark: Literal["facets", "domains", "folder", "fashion_mnist"] = "facets"
    task: str = "count+colour"
    # fashion_mnist: torchvision's folder, <root>/FashionMNIST/raw/ (`make data-fashion-mnist` fills it),
    # checked with the params then. A dependency of the target stage in dvc.yaml, so under DVC it must exist for
    # every benchmark (the default, datasets/, is committed with its README).
    root: str = Field("datasets", min_length=1)
    # facets, domains: images a class generated; fashion_mnist: drawn a class with data.seed (null: every image)
    train_per_class: int | None = Field(60, ge=1)
    test_per_class: int | None = Field(40, ge=1)
    imbalance: float = Field(1.0, ge=1)  # facets: most / least frequent training class (long tail)

    @model_validator(mode="after")
    def _sizes(self) -> "TargetParams":
        if self.benchmark in ("facets", "domains"):
            for key in ("train_per_class", "test_per_class"):
                if getattr(self, key) is None:
                    raise ValueError(f"{key}: null (every image) applies to a data set on disk (fashion_mnist), "
                                     f"not to the generated {self.benchmark} benchmark: give a number")
        return self


class Recipe(Section):
    """What every training of the branch shares: the budget, the optimiser and the batches."""

    epochs: int = Field(12, ge=1)
    batch_size: int = Field(64, ge=2)
    # adamw: AdamW, 1-D parameters not decayed | sgd: SGD with Nesterov momentum, every parameter decayed (the
    # MCL authors' CIFAR recipe: lr 0.1, weight decay 5e-4, momentum 0.9). Either with the warm-up + cosine schedule.
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    flip: bool = True  # random horizontal flips
    # Random crops of the image zero-padded by this many pixels a side (torchvision's RandomCrop(size, padding),
    # the CIFAR recipe of the KD and MCL papers: 4 at 32 px); 0: none. With crops a teacher's outputs are no
    # longer a lookup by image and flip: the teacher runs on every batch (pipeline/compression/base.py).
    crop_padding: int = Field(0, ge=0)
    seed: int = 0


# A CNN's stem downsampling: null as built (4 for ResNets and ShuffleNetV2, 2 for MobileNets) | 2 | 1, the CIFAR
# variants' stems for 32 px images (pipeline/models/cnn.py, set_stem_stride)
StemStride = Literal[1, 2] | None


class TeacherParams(Recipe):
    arch: str = "resnet18"  # any timm CNN (or torchvision classifier) name, trained from scratch, no download
    stem_stride: StemStride = None
    epochs: int = Field(8, ge=1)
    # class imbalance: inverse-frequency loss weights or class-balanced sampling
    balance: Literal["none", "weights", "sampler"] = "none"

    @property
    def warmup_steps(self) -> int | None:
        return None  # a twentieth of the steps (pipeline/compression/trainer.py)


class TokenStudentParams(Section):
    """The distillation-token student (pipeline/models/student.py); every component can be switched off."""

    patch_size: int = Field(4, ge=1)
    d_model: int = Field(64, ge=1)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(4, ge=1)
    d_ff: int = Field(128, ge=1)
    emb_dropout: float = Field(0.0, ge=0, lt=1)  # patent 0.3; DeiT found dropout hurts
    dropout: float = Field(0.0, ge=0, lt=1)
    attn_window: int | None = Field(2, ge=0)  # patch tokens see patches within this radius; null = full
    window_kind: Literal["2d", "1d"] = "2d"  # 2-D neighbourhood on the grid | 1-D raster window
    ft_layers: bool = True  # feature-wise transformation layers (training only)
    ft_init_gamma: float = Field(0.05, gt=0)  # Tseng et al.: 0.3 / 0.5 (after BatchNorm in a ResNet)
    ft_init_beta: float = Field(0.05, gt=0)
    leff: bool = True  # locally-enhanced (depthwise-conv) feed-forward; false = plain MLP
    leff_depth: int = Field(1, ge=1)  # depthwise convs in the stack (patent: 32)
    leff_kernel: int = Field(3, ge=1)

    @model_validator(mode="after")
    def _shapes(self) -> "TokenStudentParams":
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.leff_kernel % 2 == 0:
            raise ValueError(f"leff_kernel must be odd, got {self.leff_kernel}")
        return self


class TokenParams(Section):
    """Method `token` (docs/methods/token.md): DeiT-style distillation through a distillation token."""

    mode: Literal["soft", "hard"] = "soft"
    lam: float = Field(0.5, ge=0, le=1)  # soft: (1 - lam) CE + lam tau^2 KL
    tau: float = Field(2.0, gt=0)
    # learning-to-learn of the FT layers' theta (patent's "first training"; Tseng et al. 2020)
    l2l: bool = True
    l2l_every: int = Field(16, ge=1)  # a meta step every N steps (each costs ~4 plain steps); others plain
    l2l_unseen_classes: int = Field(7, ge=1)  # pseudo-unseen classes per episode (patent: 1 of 5)
    l2l_inner_lr: float = Field(0.1, gt=0)  # look-ahead SGD step
    l2l_theta_lr: float = Field(1e-2, gt=0)  # Adam on theta
    student: TokenStudentParams = TokenStudentParams()

    @model_validator(mode="after")
    def _l2l_needs_ft(self) -> "TokenParams":
        if self.l2l and not self.student.ft_layers:
            raise ValueError("l2l needs student.ft_layers (learning-to-learn trains the FT layers' theta)")
        return self


class KDParams(Section):
    """Method `kd` (Hinton et al. 2015): (1 - weight) CE(z_s, y) + weight tau^2 KL(softmax(z_t/tau) || softmax(z_s/tau))."""

    tau: float = Field(4.0, gt=0)
    weight: float = Field(0.9, ge=0, le=1)


class FeatureParams(Section):
    """Methods `fitnet` and `channel_matching`: a distance loss between teacher and student feature maps at
    paired sites, added to the student's cross entropy with `weight`."""

    weight: float = Field(1.0, ge=0)
    loss: Literal["mse", "partial_l2"] = "partial_l2"  # partial_l2: pre-ReLU partial L2 (Heo et al. 2019)
    # [[teacher site, student site], ...] by name (pipeline/models/sites.py); null: each student stage's last
    # block paired with the teacher's of the same spatial size
    sites: list[Annotated[list[str], Field(min_length=2, max_length=2)]] | None = None


class MatchingParams(Section):
    """Method `channel_matching` (docs/methods/channel_matching.md): teacher channels matched to student channels."""

    rule: Literal["sparse", "random", "maxpool"] = "sparse"
    distance: Literal["l2", "cosine"] = "l2"  # of the spatially normalised channel maps, summed over images
    choose: Literal["random", "odd_first"] = "random"  # which r n of m teacher channels enter the replication
    select_per: Literal["step", "sample"] = "step"  # rule random: one draw per step or per image
    rematch_every: int = Field(1, ge=1)  # epochs between matchings (the student's channels change as it learns)
    rematch_images: int = Field(512, ge=1)  # training images the distance matrix is computed on


class DistillParams(Recipe):
    teacher: str = "cnn"  # cnn (stage `teacher`) | a model of the continual chain (its zero-shot head)
    method: str = TOKEN  # token | kd | fitnet | channel_matching (pipeline/names.py)
    student: str = TOKEN  # token: the distillation-token student | a timm (or torchvision) CNN name
    stem_stride: StemStride = None  # a CNN student's stem downsampling
    warmup_steps: int = Field(20, ge=0)
    balance: Literal["none", "sampler"] = "none"  # class-balanced sampling (the losses take no class weights)
    token: TokenParams = TokenParams()
    kd: KDParams = KDParams()
    feature: FeatureParams = FeatureParams()
    matching: MatchingParams = MatchingParams()

    @model_validator(mode="after")
    def _method_fits_student(self) -> "DistillParams":
        check_name(self.method, DISTILL_METHODS, "distillation method")
        if (self.method == TOKEN) != (self.student == TOKEN):
            raise ValueError(f"method {self.method!r} cannot train student {self.student!r}: the token method "
                             f"trains the token student and only it (set distill.method and distill.student together)")
        if self.student == TOKEN and self.stem_stride is not None:
            raise ValueError("stem_stride is a CNN student's; the token student's input is cut by token.student.patch_size")
        if self.method in ONLINE_METHODS:
            raise ValueError(f"method {self.method!r} trains a cohort without a teacher: set cohort.method (stage cohort)")
        if self.method in FEATURE_METHODS and self.teacher != "cnn":
            raise ValueError(f"method {self.method!r} distils feature maps: it needs teacher 'cnn', not {self.teacher!r}")
        return self


ALONE = "alone"  # cohort.method: every network of the cohort on the labels alone (same batches and budget)


class MCLParams(Section):
    """Method `mcl` (docs/methods/mcl.md): sum_a CE_a + alpha VCL + beta ICL + gamma soft VCL + lam soft
    ICL; defaults: the authors' README."""

    alpha: float = Field(0.1, ge=0)  # VCL, inside each network
    beta: float = Field(0.1, ge=0)  # ICL, across every ordered pair
    gamma: float = Field(1.0, ge=0)  # soft VCL
    lam: float = Field(1.0, ge=0)  # soft ICL
    tau: float = Field(0.07, gt=0)  # similarity temperature
    temperature: float = Field(3.0, gt=0)  # T of the soft terms (KL times T^2)
    # ICL's same-image cross-network pair: "positive" (the paper's form) or left out of the anchor's row ("mask",
    # the authors' code)
    icl_diagonal: Literal["mask", "positive"] = "mask"


class LMCLParams(MCLParams):
    """Method `lmcl`, layer-wise MCL (TPAMI 2023): MCL's four terms between every stage of one network and every
    stage of another, each image weighted by the meta-network; plus CE of every stage classifier and of each
    network's aggregate of them, and T^2 KL of each network's last stage towards every aggregate (detached).
    Defaults: the authors' main_layer_mcl_cifar_meta.py. Their loss visits each pair of networks in both orders
    with the same weight, so their alpha..lam (0.1, 0.1, 1, 1) count twice: here, visiting each pair once, the
    same loss takes twice those."""

    alpha: float = Field(0.2, ge=0)
    beta: float = Field(0.2, ge=0)
    gamma: float = Field(2.0, ge=0)
    lam: float = Field(2.0, ge=0)
    tau: float = Field(0.1, gt=0)
    stages: int = Field(3, ge=1)  # the last `stages` stages of each network; auxiliary branches after all but the last
    meta_every: int = Field(50, ge=1)  # steps between meta-optimisations
    virtual_steps: int = Field(2, ge=1)  # virtual SGD steps on the weighted MCL loss
    virtual_task_step: bool = True  # then one on the stages' CE (the authors' code); the CE after them is the meta loss
    # The virtual steps are SGD as the authors' (momentum 0.9 from a zero buffer, weight decay meta_weight_decay),
    # whatever the run's optimiser; both learning rates follow the run's schedule (lr_t / lr), as their adjust_lr.
    virtual_lr: float = Field(0.1, gt=0)
    meta_lr: float = Field(0.1, gt=0)  # the meta-network's SGD, Nesterov momentum 0.9
    meta_weight_decay: float = Field(5e-4, ge=0)
    meta_dim: int = Field(128, ge=1)


class DMLParams(Section):
    """Method `dml` (Zhang et al., CVPR 2018): each network CE plus the mean over the others of KL(p_b || p_a),
    p_b detached, at `temperature` (times T^2; 1 in the paper)."""

    temperature: float = Field(1.0, gt=0)


class CohortParams(Recipe):
    """Stage `cohort`: M networks trained together by an online method (no pretrained teacher), or alone."""

    method: str = "mcl"  # mcl | lmcl | dml | alone (pipeline/names.py ONLINE_METHODS)
    networks: list[str] = Field(default_factory=lambda: ["shufflenet_v2_x0_5", "shufflenet_v2_x0_5"], min_length=2)
    stem_stride: StemStride = None  # every network's stem downsampling
    epochs: int = Field(48, ge=1)  # `make cohort` (not in `make repro`): trained networks; compare-cohort sets its own
    batch_size: int = Field(32, ge=2)
    lr: float = Field(0.01, gt=0)
    warmup_steps: int = Field(20, ge=0)
    # every batch: batch_size / per_class classes, per_class images of each (drawn as the authors' MPerClassSampler),
    # so every anchor of the contrastive terms has a positive; "none": epochs of permutations
    balance: Literal["per_class", "none"] = "per_class"
    per_class: int = Field(2, ge=2)
    embed_dim: int = Field(128, ge=1)  # projection heads (MCL, L-MCL): Linear -> ReLU -> Linear to this, L2-normalised
    mcl: MCLParams = MCLParams()
    lmcl: LMCLParams = LMCLParams()
    dml: DMLParams = DMLParams()

    @model_validator(mode="after")
    def _method_and_batches(self) -> "CohortParams":
        if self.method != ALONE and self.method not in ONLINE_METHODS:
            raise ValueError(f"unknown cohort method {self.method!r}; known: {', '.join(sorted([*ONLINE_METHODS, ALONE]))}")
        if self.balance == "per_class" and self.batch_size % self.per_class:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of per_class {self.per_class}")
        return self
