"""Dual-teacher prototype distillation (docs/methods/dual_teacher.md; MulKI, arXiv 2411.06764).

Teachers E0 and E_{m-1} (frozen, features cached per task); class prototypes from E0 updated by a sliding
average of the student's batch features; L = ce_weight L_ce + con_weight L_con + dis_weight L_dis.

`loss.dis_scope: seen` (our extension, beyond the patent) widens L_dis from the current task to every task
seen so far: student rows H = [V; U_1..U_m], columns P_all = [P_1; ..; P_{m-1}; P_m], with P_1..P_{m-1} as
their tasks ended (constants) and P_m the live, sliding one. L_ce and L_con stay on the current task.
Its cost is a text-tower forward over every seen class's prompts each step (about 1,200 classes by MTIL
order I's task 11); `loss.dis_seen_sample` = K bounds it: each step the rows U hold K of the earlier tasks'
classes, drawn anew (uniformly, from a stream of its own), and all of this task's; the columns P_all stay whole.

Several processes (`runtime.nproc`): L_con, L_dis (a Frobenius norm over the batch's rows) and the prototype
update are functions of the whole batch, not means of per-sample terms, so every rank gathers the global
batch's V, labels and teacher rows (pipeline/distributed.py, `gather_rows`) and computes all three terms and the
update on it: the same loss and the same prototypes as one process, on every rank.

`loss.dual_ensemble_every` = N > 0 (off by default): ZSCL's weight ensemble on dual-teacher's own steps, the
running mean of the task's weights every N steps put in the model at the task's end (pipeline/continual/weights.py,
`WeightEnsemble`). It needs no data, so dual-teacher keeps its setting (the current task's images and earlier
weights only); issue 33 tries it on validation data as weight-space ensembling of the method family.

State saved beside the model (models/<task>/method_state.safetensors): `prototypes` is the task's own P_m as
it ended, `prototypes/<task>` each earlier task's P_k as it was handed on; the next task reads them there.
"""
from __future__ import annotations

import warnings

import torch

from pipeline import distributed, paths
from pipeline.runtime import stable_seed
from pipeline.continual.base import Method
from pipeline.continual.inputs import TaskInputs
from pipeline.continual.prototypes import update_prototypes
from pipeline.continual.registry import register_method
from pipeline.continual.weights import WeightEnsemble
from pipeline.losses import clip_ce, dual_teacher_distillation, prototype_contrastive
from pipeline.errors import InputError

PROTOTYPES = "prototypes"  # state key of the task's own prototypes P_m, as they ended


def earlier_key(task: str) -> str:
    """State key of an earlier task's prototypes, carried along the chain."""
    return f"{PROTOTYPES}/{task}"


def carried_prototypes(ctx: TaskInputs) -> dict[str, torch.Tensor]:
    """P_1..P_{m-1}, each as its task ended, by task name in training order (empty on the first task).

    train@<task> depends on models/<prev> only, so they travel along the chain: the previous task's own
    prototypes are its state's `prototypes`, the earlier ones its `prototypes/<task>`. Fallback: where the
    previous task left no state file or lacks a key (it was trained by another method, or before prototypes
    were carried), E0's initial prototypes of that task from the prototypes stage
    (data/prototypes/<task>.safetensors) stand in; with `loss.dis_scope: seen`, where they enter the loss,
    a warning names those tasks. From the inputs `prev_state` and `earlier_prototypes` (E0's initial P_k)."""
    path = paths.method_state(ctx.prev_name)  # named in the messages
    state = ctx.prev_state
    carried, fallback = {}, []
    for name in ctx.base_names:
        initial = ctx.earlier_prototypes[name]  # E0's initial P_k
        key = PROTOTYPES if name == ctx.prev_name else earlier_key(name)
        if key not in state:
            fallback.append(name)
            carried[name] = initial
        elif state[key].shape != initial.shape:
            raise InputError(f"{path}: {key} has shape {tuple(state[key].shape)}, task {name!r} {tuple(initial.shape)}")
        else:
            carried[name] = state[key].to(initial)
    if fallback and ctx.params.loss.dis_scope == "seen":
        warnings.warn(
            f"{path}: no final prototypes of {', '.join(fallback)}; E0's initial prototypes stand in", stacklevel=2
        )
    return carried


@register_method
class DualTeacher(Method):
    name = "dual_teacher"

    @classmethod
    def reads(cls, loss, first):
        # E_{m-1}'s features only where they enter the loss (the e0-only ablation must not pay for them).
        prev = {"prev_features"} | ({"seen_prev_text"} if loss.dis_scope == "seen" else set())
        return frozenset({"prototypes", "prev_state", "earlier_prototypes", "e0_features"}
                         | ({"seen_e0_text"} if loss.dis_scope == "seen" else set())
                         | (prev if loss.dis_teachers != "e0" else set()))

    def __init__(self, ctx):
        super().__init__(ctx)
        self.prototypes = ctx.prototypes.clone()  # P_m, a buffer: never a parameter, never given gradient
        # Kept and saved whatever loss.dis_scope is, so switching to "seen" later retrains no earlier task.
        self.earlier_prototypes = carried_prototypes(ctx)
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self.ensemble = WeightEnsemble(ctx.student.model, ctx.params.loss.dual_ensemble_every)
        sample = ctx.params.loss.dis_seen_sample
        earlier = sum(len(t.classes) for t in ctx.base_tasks) if ctx.params.loss.dis_scope == "seen" else 0
        # Drawn only where it bounds something (fewer earlier classes than K: every one, as without it).
        self.seen_sample = sample if sample is not None and earlier > sample else None
        if self.seen_sample is not None:
            self.seen_generator = torch.Generator().manual_seed(stable_seed(ctx.params.train.seed, ctx.name, "dis_seen_sample"))

    def sampled_seen(self) -> tuple[list[list[list[str]]], torch.Tensor]:
        """`loss.dis_seen_sample` of the earlier tasks' classes and all of this task's: their prompts by task (in
        task order, classes ascending) and their rows in the seen stacking (tasks 1..m, this task's last)."""
        tasks = self.ctx.base_tasks
        offsets = torch.tensor([0, *(len(t.classes) for t in tasks)]).cumsum(0)
        earlier = int(offsets[-1])
        picked = torch.randperm(earlier, generator=self.seen_generator)[: self.seen_sample].sort().values
        prompts = []
        for k, task in enumerate(tasks):
            classes = picked[(picked >= offsets[k]) & (picked < offsets[k + 1])] - offsets[k]
            if len(classes):
                all_prompts = task.prompts()
                prompts.append([all_prompts[c] for c in classes.tolist()])
        rows = torch.cat([picked, torch.arange(earlier, earlier + len(self.ctx.task.classes))])
        return [*prompts, self.ctx.task.prompts()], rows

    def weights(self):
        loss = self.ctx.params.loss
        return {"ce": loss.ce_weight, "con": loss.con_weight, "dis": loss.dis_weight}

    def terms(self, batch):
        images, labels, indices = batch.images, batch.labels, batch.indices
        loss, ctx = self.ctx.params.loss, self.ctx
        seen = loss.dis_scope == "seen"
        rows = None  # with dis_seen_sample: the seen classes in this step's U, as rows of the seen stacking
        if seen and self.seen_sample is not None:
            prompts, rows = self.sampled_seen()
            v, u_dis = self.student_forward([images], [prompts])
        else:
            # U of this task, or of tasks 1..m (this one last)
            v, u_dis = self.student_forward([images], [[t.prompts() for t in (ctx.seen_tasks if seen else [ctx.task])]])
        # E_{m-1}'s features only where they enter the loss (the e0-only ablation must not pay for them). The
        # teachers' rows of this rank's images: cached, or the teachers run on the (augmented) images.
        e0, prev = ctx.e0_features, None if loss.dis_teachers == "e0" else ctx.prev_features
        e0_image, prev_image = e0.image(images, indices), None if prev is None else prev.image(images, indices)
        # The global batch (several processes: every rank's rows, in the batch's order; one: these themselves).
        v, labels, e0_image = distributed.gather_rows(v), distributed.gather(labels), distributed.gather(e0_image)
        prev_image = None if prev_image is None else distributed.gather(prev_image)
        u = u_dis[len(u_dis) - len(ctx.task.classes) :]
        self._batch = (v.detach(), labels)
        if seen:
            prototypes = torch.cat([*self.earlier_prototypes.values(), self.prototypes])
            e0_text, prev_text = ctx.seen_e0_text, None if prev is None else ctx.seen_prev_text
            if rows is not None:
                e0_text, prev_text = e0_text[rows.to(e0_text.device)], None if prev_text is None else prev_text[rows.to(prev_text.device)]
        else:
            prototypes, e0_text, prev_text = self.prototypes, e0.text, None if prev is None else prev.text
        student_rows = torch.cat([v, u_dis])  # H = [V; U]
        e0_rows = torch.cat([e0_image, e0_text])
        prev_rows = None if prev is None else torch.cat([prev_image, prev_text])
        if loss.dis_teachers == "prev" and prev_rows is not None:
            e0_rows, prev_rows = prev_rows, None  # the single-teacher form, with E_{m-1} as the teacher
        return {
            "ce": clip_ce(v, u, labels, ctx.student.logit_scale, loss.label_smoothing),
            "con": prototype_contrastive(v, labels, u, self.prototypes, loss.tau),
            "dis": dual_teacher_distillation(
                student_rows, prototypes, e0_rows, prev_rows, loss.teacher_weighting, loss.adaptive_k, loss.adaptive_b
            ),
        }

    def after_step(self):
        v, labels = self._batch
        self.prototypes = update_prototypes(self.prototypes, v, labels, self.ctx.params.loss.gamma)
        self.ensemble.after_step(self.ctx.student.model)

    def finish(self):
        # The prototypes stay as the live student's features made them: the mean's own would need data again.
        self.ensemble.finish(self.ctx.student.model)

    def state(self):
        earlier = {earlier_key(name): p for name, p in self.earlier_prototypes.items()}
        return {PROTOTYPES: self.prototypes, **earlier}
