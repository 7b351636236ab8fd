"""What the stages `distill` and `student_alone` share (train a fresh student with a method, test it, save it),
the stage `teacher`'s training of the CNN teacher and the stage `cohort`'s training of a cohort (the room probe,
pipeline/room.py, calls the same three)."""
from __future__ import annotations

import torch

from pipeline import io, metrics, runtime
from pipeline.compression import data as D
from pipeline.compression import students
from pipeline.compression.base import DistillContext, DistillMethod
from pipeline.params.compression import ALONE, TOKEN
from pipeline.compression.registry import get_method
from pipeline.names import SUPERVISED
from pipeline.compression.teachers import Teacher
from pipeline.compression.trainer import fit
from pipeline.params import Params
from pipeline.data import TaskData
from pipeline.errors import InputError
from pipeline.models import classifier, cohort
from pipeline.models.classifier import image_input


def train_teacher(params: Params, task: TaskData, device: torch.device, logger=None) -> tuple[torch.nn.Module, dict, float, torch.Tensor]:
    """The CNN of `params.teacher` trained on the labels alone through the branch's one loop (the seed set by the
    caller's runtime.setup). Returns (the model, what the loop logged, its test accuracy, its test scores)."""
    tp = params.teacher
    model = classifier.build_cnn(tp.arch, len(task.classes), tp.stem_stride).to(device)
    classifier.check_image_size(model, tp.arch, task.train_images.shape[-1])
    method = get_method(SUPERVISED)(DistillContext(model, task, tp, device, precision=params.runtime.precision))
    logged = fit(method, logger, desc=f"teacher {tp.arch}")
    scores = students.prediction(students.test_scores(model, task.test_images, params.eval.batch_size, device,
                                                      params.runtime.precision))
    return model, logged, metrics.top1(scores, task.test_labels), scores


def student_method(params: Params, task: TaskData, teacher: Teacher | None, device: torch.device) -> DistillMethod:
    """`distill.method` on a fresh student of `params.distill` (`teacher` None: the student on the labels alone,
    the token student through the token method's label-only step, a CNN through `supervised`)."""
    dp = params.distill
    torch.manual_seed(runtime.stable_seed(dp.seed, "student init"))  # alone and distilled start from the same weights
    model = students.build(dp, params.data.image_size, len(task.classes))
    name = dp.method if teacher is not None else (TOKEN if dp.student == TOKEN else SUPERVISED)
    return get_method(name)(DistillContext(model, task, dp, device, teacher, eval_batch_size=params.eval.batch_size,
                                           precision=params.runtime.precision))


def check_cohort_batches(cp, task: TaskData) -> None:
    """Before any model is built: a per-class batch needs batch_size / per_class classes of the target."""
    if cp.balance != "per_class":
        return
    needed, present = cp.batch_size // cp.per_class, len(torch.unique(task.train_labels))
    if needed > present:
        raise InputError(f"cohort.batch_size: {cp.batch_size} at cohort.per_class {cp.per_class} needs {needed} "
                         f"classes a batch, and target {task.name} has {present}: raise cohort.per_class or lower "
                         f"cohort.batch_size")


def cohort_method(params: Params, task: TaskData, device: torch.device) -> DistillMethod:
    """`cohort.method` on a fresh cohort of `params.cohort` (`alone`: `supervised`, each network on the labels)."""
    cp = params.cohort
    check_cohort_batches(cp, task)
    torch.manual_seed(runtime.stable_seed(cp.seed, "cohort init"))  # every method starts from the same weights
    model = cohort.build(cp.networks, len(task.classes), cp.stem_stride, cp.embed_dim)
    for arch, network in zip(cp.networks, model.networks):
        classifier.check_image_size(network, arch, params.data.image_size, key="cohort.networks")
    name = SUPERVISED if cp.method == ALONE else cp.method
    return get_method(name)(DistillContext(model, task, cp, device, eval_batch_size=params.eval.batch_size,
                                           precision=params.runtime.precision))


def train_and_test(params: Params, task: TaskData, teacher: Teacher | None, device: torch.device,
                   model_dir, logger=None, desc: str = "student") -> tuple[dict, dict]:
    """Train the student of `params.distill` with `distill.method` (`teacher` None: on the labels alone, the
    token student through the token method's label-only step, a CNN through `supervised`); save it to
    `model_dir`; `logger`: a DVCLive logger for the training curves. Returns (summary, per-class accuracy of
    its prediction, cost: wall time per step and peak memory, kept apart because it varies run to run)."""
    dp = params.distill
    method = student_method(params, task, teacher, device)
    model, name = method.ctx.student, method.name
    logged = fit(method, logger, desc=desc)
    scores = students.test_scores(model, task.test_images, params.eval.batch_size, device, params.runtime.precision)
    prediction = students.prediction(scores)
    summary = {
        "method": name, "student": dp.student,
        "accuracy": metrics.top1(prediction, task.test_labels),
        "heads": {head: metrics.top1(s, task.test_labels) for head, s in scores.items()},
        "parameters": sum(p.numel() for p in model.parameters()),
        "added_parameters": method.added_parameters(),  # trained with the student, not part of it
        **method.describe(),
    }
    with io.atomic_dir(model_dir) as folder:
        classifier.save(model.cpu(), folder, students.meta(model, dp, task.classes, method=name,
                                                           params=dp.model_dump(mode="json")))
    cost = {"step_seconds": round(logged["step_seconds"], 5), "peak_memory_mb": runtime.peak_memory_mb(device)}
    return summary, metrics.per_class_top1(prediction, task.test_labels, task.classes), cost


def train_cohort(params: Params, task: TaskData, device: torch.device, model_dir, logger=None) -> tuple[dict, dict, dict]:
    """Train the cohort of `params.cohort` with `cohort.method` (`alone`: each network on the labels alone, the
    same initial weights and batches as the online methods'), test every network and their ensemble (the mean
    of the networks' softmax), save it to `model_dir`. Returns (summary, per-class accuracy of the ensemble,
    cost)."""
    cp = params.cohort
    method = cohort_method(params, task, device)
    model = method.ctx.student
    logged = fit(method, logger, desc=f"cohort {cp.method}")
    with method.ctx.autocast():
        logits = D.predict(lambda b: model(image_input(b)).transpose(0, 1), task.test_images, params.eval.batch_size, device)
    logits = logits.transpose(0, 1)  # (M, N, K)
    ensemble = cohort.ensemble_probs(logits)
    networks = [metrics.top1(z, task.test_labels) for z in logits]
    summary = {
        "method": cp.method, "networks": cp.networks,
        "accuracy": sum(networks) / len(networks),  # the mean network's: what each member gains
        "ensemble_accuracy": metrics.top1(ensemble, task.test_labels),
        "network_accuracy": networks,
        "parameters": [sum(p.numel() for p in n.parameters()) for n in model.networks],
        "added_parameters": method.added_parameters(),  # trained with the cohort, not saved (L-MCL's branches)
        **method.describe(),
    }
    with io.atomic_dir(model_dir) as folder:
        classifier.save(model.cpu(), folder, cohort.meta(cp, task.classes, params=cp.model_dump(mode="json")))
    cost = {"step_seconds": round(logged["step_seconds"], 5), "peak_memory_mb": runtime.peak_memory_mb(device)}
    return summary, metrics.per_class_top1(ensemble, task.test_labels, task.classes), cost
