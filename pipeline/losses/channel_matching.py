"""Feature distillation by channel matching, with no learnable adapter (docs/methods/channel_matching.md; the
closest paper is Matching Guided Distillation, Yue, Deng & Zhou, ECCV 2020, arXiv 2008.09958, Sec. 3).

The teacher's m channels at a distillation site are matched to the student's n <= m channels by an assignment
on a channel distance matrix D (n, m); the matched teacher channels (sparse matching), one of them picked at
random (random selection) or their elementwise maximum (max-feature pooling) are the target of a distance loss
per matched pair. Feature tensors are (B, C, H, W) with the same H, W for student and teacher. Everything here
is a pure function of tensors: the caller runs the models, accumulates D over up to a fixed number of images
(D is a sum over samples, so batch matrices add up) and rematches every ``rematch_every`` epochs.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from pipeline.losses.registry import register_loss

DISTANCES = ("l2", "cosine")
CHOOSE_RULES = ("random", "odd_first")
SELECTION = ("step", "sample")
EPS = 1e-12  # lower bound on a channel map's norm (F.normalize's default): a zero map stays the zero vector


def _check_features(student: Tensor, teacher: Tensor) -> None:
    if student.ndim != 4 or teacher.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W); got {tuple(student.shape)} and {tuple(teacher.shape)}")
    b, n, h, w = student.shape
    if teacher.shape[0] != b or teacher.shape[2:] != (h, w) or teacher.shape[1] < n:
        raise ValueError(f"teacher {tuple(teacher.shape)} must be (B, m >= n, H, W) for student {tuple(student.shape)}")


def channel_distance(student: Tensor, teacher: Tensor, kind: str = "l2", eps: float = EPS) -> Tensor:
    """Channel distance matrix over a batch (spec, "Distances"; MGD Sec. 3.1): with the per-sample spatially
    L2-normalised maps s^_bi = s_bi / max(||s_bi||, eps) and t^_bj (each flattened to H * W values),

        l2:      D_ij = sum_b || s^_bi - t^_bj ||^2
        cosine:  D_ij = sum_b ( 2 - 2 <s^_bi, t^_bj> )

    For unit maps ||a - b||^2 = 2 - 2 <a, b>, so the two kinds agree; they differ only where a map is (near)
    zero: it stays the zero vector, at l2 distance 1 (0 if both are zero) but cosine distance 2 from any map.
    Computed without gradient: matching is a discrete decision, not something to train.

    Args:
        student: (B, n, H, W) student features. teacher: (B, m, H, W) teacher features, m >= n.
        kind: "l2" | "cosine". eps: lower bound on a map's norm.
    Returns:
        (n, m) distances, float32 or wider, on the inputs' device, no grad.
    """
    if kind not in DISTANCES:
        raise ValueError(f"unknown channel distance {kind!r}; expected one of {DISTANCES}")
    _check_features(student, teacher)
    dtype = torch.promote_types(student.dtype, torch.float32)  # a half-precision sum over many images drifts
    with torch.no_grad():
        s = F.normalize(student.detach().flatten(2).to(dtype), dim=2, eps=eps)  # (B, n, HW)
        t = F.normalize(teacher.detach().flatten(2).to(dtype), dim=2, eps=eps)  # (B, m, HW)
        dot = torch.bmm(s, t.transpose(1, 2))  # (B, n, m)
        if kind == "cosine":
            return (2 - 2 * dot).sum(dim=0)
        # ||a - b||^2 expanded, so no (B, n, m, HW) difference tensor is built; clamp the rounding below 0.
        sq = s.pow(2).sum(2).unsqueeze(2) + t.pow(2).sum(2).unsqueeze(1) - 2 * dot
        return sq.clamp_min(0).sum(dim=0)


def _cost(distance: Tensor) -> np.ndarray:
    if distance.ndim != 2 or distance.shape[0] > distance.shape[1] or distance.shape[0] == 0:
        raise ValueError(f"distance must be (n, m) with 1 <= n <= m; got {tuple(distance.shape)}")
    cost = distance.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(cost).all():
        raise ValueError("distance matrix has non-finite entries")
    return cost


def sparse_matching(distance: Tensor) -> Tensor:
    """Sparse matching (spec, rule 1; MGD "sparse matching"): pad D (n, m) with m - n rows of a value larger
    than any real distance (max(D) + 1) to (m, m), solve the assignment (scipy's linear_sum_assignment) and keep
    rows 0..n-1. The padding rows add the same constant whatever columns they take, so the optimum on the real
    rows is that of the rectangular (n, m) problem: each student channel gets a distinct teacher channel.

    Args:
        distance: (n, m) channel distances, n <= m.
    Returns:
        (n,) int64 teacher channel of each student channel, distinct, on distance's device.
    """
    cost = _cost(distance)
    n, m = cost.shape
    padded = np.vstack([cost, np.full((m - n, m), cost.max() + 1.0)])  # (m, m)
    rows, cols = linear_sum_assignment(padded)
    return torch.as_tensor(cols[np.argsort(rows)][:n], dtype=torch.int64, device=distance.device)


def choose_teacher_channels(
    n: int, m: int, generator: torch.Generator | None = None, choose: str = "random"
) -> Tensor:
    """The s = r * n teacher channels (r = m // n) that replicated matching uses (spec, "Hungarian matching with
    replication"). When n divides m, all m (the generator is not drawn from). Otherwise:

    - ``random``: a uniformly random s-subset (``torch.randperm(m, generator=generator)[:s]``; the global RNG
      when generator is None).
    - ``odd_first``: positions counted from 1 as in the patent, odd positions first, then even ones, and the
      first s of that order: 0-based indices 0, 2, 4, ... then 1, 3, 5, ...; the dropped m - s channels are the
      last even positions (e.g. m = 7, n = 3: s = 6, channel 5 is dropped).

    Returns:
        (s,) int64 teacher channel indices, ascending.
    """
    if not 1 <= n <= m:
        raise ValueError(f"need 1 <= n <= m; got n={n}, m={m}")
    if choose not in CHOOSE_RULES:
        raise ValueError(f"unknown channel choice {choose!r}; expected one of {CHOOSE_RULES}")
    s = (m // n) * n
    if s == m:
        return torch.arange(m)
    if choose == "random":
        chosen = torch.randperm(m, generator=generator)[:s]
    else:
        chosen = torch.cat([torch.arange(0, m, 2), torch.arange(1, m, 2)])[:s]
    return chosen.sort().values


def replicated_matching(
    distance: Tensor, generator: torch.Generator | None = None, choose: str = "random"
) -> Tensor:
    """Hungarian matching with replication (spec, rules 2 and 3; MGD Sec. 3.2): r = m // n, s = r * n; take D on
    the s chosen teacher channels (``choose_teacher_channels``), stack r copies of that (n, s) matrix vertically
    to (s, s) and solve the assignment. Row j * n + k (student k in copy j) gets one teacher channel, so every
    student channel gets exactly r teacher channels and no teacher channel is used twice.

    Args:
        distance: (n, m) channel distances, n <= m. generator, choose: as in ``choose_teacher_channels``.
    Returns:
        (n, r) int64 original teacher channel indices, each row ascending, on distance's device.
    """
    cost = _cost(distance)
    n, m = cost.shape
    r = m // n
    chosen = choose_teacher_channels(n, m, generator, choose).numpy()
    stacked = np.tile(cost[:, chosen], (r, 1))  # (s, s): copy j is rows j*n .. j*n + n - 1
    rows, cols = linear_sum_assignment(stacked)
    teacher = chosen[cols[np.argsort(rows)]].reshape(r, n).T  # [k, j]: copy j's channel for student k
    return torch.as_tensor(np.sort(teacher, axis=1), dtype=torch.int64, device=distance.device)


def gather_channels(teacher: Tensor, index: Tensor) -> Tensor:
    """Target of sparse matching: teacher channel index[k] for student channel k.

    Args: teacher: (B, m, H, W). index: (n,) int64 from ``sparse_matching``.
    Returns: (B, n, H, W).
    """
    return teacher.index_select(1, index.to(teacher.device))


def random_selection(
    teacher: Tensor, assignment: Tensor, generator: torch.Generator | None = None, per: str = "step"
) -> Tensor:
    """Random selection (spec, rule 2): for each student channel k, one of its r matched teacher channels
    assignment[k] uniformly at random, one draw shared by the whole batch (``per="step"``) or one per sample
    (``per="sample"``). Draws come from ``generator`` (the global RNG when None) on its device.

    Args:
        teacher: (B, m, H, W). assignment: (n, r) int64 from ``replicated_matching``. per: "step" | "sample".
    Returns:
        (B, n, H, W).
    """
    if per not in SELECTION:
        raise ValueError(f"unknown selection {per!r}; expected one of {SELECTION}")
    b, _, h, w = teacher.shape
    n, r = assignment.shape
    device = generator.device if generator is not None else torch.device("cpu")
    size = (n,) if per == "step" else (b, n)
    pick = torch.randint(r, size, generator=generator, device=device).to(assignment.device)
    rows = torch.arange(n, device=assignment.device)
    index = assignment[rows, pick].to(teacher.device)  # (n,) or (B, n) teacher channels
    if per == "step":
        return teacher.index_select(1, index)
    return teacher.gather(1, index[:, :, None, None].expand(b, n, h, w))


def max_pooling(teacher: Tensor, assignment: Tensor) -> Tensor:
    """Max-feature pooling (spec, rule 3): target channel k is the elementwise maximum of the r teacher channels
    assignment[k], at each sample and position.

    Args: teacher: (B, m, H, W). assignment: (n, r) int64 from ``replicated_matching``.
    Returns: (B, n, H, W).
    """
    return teacher[:, assignment.to(teacher.device)].amax(dim=2)  # (B, n, r, H, W) -> (B, n, H, W)


def _pair(student: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if student.shape != target.shape:
        raise ValueError(f"student {tuple(student.shape)} != target {tuple(target.shape)}")
    return student, target.detach().to(student.dtype)  # the teacher is frozen: its target is a constant


@register_loss("channel_mse")
def feature_mse(student: Tensor, target: Tensor) -> Tensor:
    """MSE between student channels and their matched teacher targets (spec, "Training"):
    mean over all B * n * H * W elements of (s - t)^2.

    Args:
        student: (B, n, H, W) student features. target: (B, n, H, W) matched teacher features (detached).
    Returns:
        scalar.
    """
    student, target = _pair(student, target)
    return (student - target).pow(2).mean()


@register_loss("channel_partial_l2")
def partial_l2(student: Tensor, target: Tensor, margin: Tensor | float | None = None) -> Tensor:
    """Pre-ReLU partial L2 (Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019, Eq. 5),
    the loss MGD uses: with t' = max(t, margin) (t itself when margin is None),

        L = (1 / (B n H W)) sum (s - t')^2 over the elements where NOT (s <= t' and t' <= 0),

    i.e. where the teacher is positive or the student is above it: where the teacher is non-positive the ReLU
    after the site zeroes both, so a student at or below it is not penalised. Normalised like ``feature_mse``
    (a mean over all elements, the skipped ones counting as 0), so the two scales compare directly: partial L2
    <= MSE, equal where the teacher is positive. Heo's and MGD's code sum over elements and divide by the batch
    size (MGD also by a loss factor, 1e4 at 224 px): that is this value times n * H * W.

    Args:
        student: (B, n, H, W) pre-ReLU student features. target: (B, n, H, W) matched teacher features
            (detached). margin: optional teacher margin broadcastable to target, e.g. (1, n, 1, 1) (Heo's
            expected value of the teacher's negative responses, from its BatchNorm).
    Returns:
        scalar.
    """
    student, target = _pair(student, target)
    if margin is not None:
        margin = margin.detach() if isinstance(margin, Tensor) else margin
        target = torch.maximum(target, torch.as_tensor(margin, dtype=target.dtype, device=target.device))
    counted = (student > target) | (target > 0)
    return torch.where(counted, (student - target).pow(2), torch.zeros_like(student)).sum() / student.numel()
