"""Stage `distill`: train the distillation-token student from the teacher (`distill.teacher`) and, with the
same seed, batches and budget, the same student on the labels alone; report both against the teacher."""
from __future__ import annotations

import dataclasses

import torch

from pipeline import io, paths, runtime
from pipeline.data import load_task
from pipeline.compression import data as D
from pipeline.compression.student_training import evaluate_student, train_student
from pipeline.compression.teachers import load_teacher, training_logits
from pipeline.models import classifier
from pipeline.models.student import StudentConfig, parameter_count
from pipeline.stages.common import live, load_params, stage
from pipeline.errors import InputError

RUNS = {"student": paths.STUDENT, "baseline": paths.STUDENT_BASELINE}  # baseline: no distillation


@stage
def main(argv):
    params = load_params("timm")
    dp = params.distill
    task = load_task(paths.TARGET)
    config = StudentConfig(image_size=params.data.image_size, num_classes=len(task.classes), **dp.student.model_dump())
    if dp.l2l and dp.l2l_unseen_classes >= len(task.classes):
        raise InputError(f"distill.l2l_unseen_classes: {dp.l2l_unseen_classes} leaves no pseudo-seen class of {len(task.classes)}")
    device = runtime.setup(params.runtime, runtime.stable_seed(dp.seed, "distill"))
    teacher = load_teacher(params, task, device)
    batch = params.eval.batch_size
    teacher_train = training_logits(teacher, task, batch, device)
    teacher_test = D.predict(teacher.logits, task.test_images, batch, device)
    labels = task.test_labels
    results, per_class = {}, {"teacher": D.per_class_accuracy(teacher_test, labels, task.classes)}
    for run, directory in RUNS.items():
        torch.manual_seed(runtime.stable_seed(dp.seed, "student init"))  # both students start from the same weights
        model = classifier.build_student(config)
        with live(paths.DISTILL_LIVE / run) as logger:
            train_student(model, task, dp, teacher_train if run == "student" else None, device, logger, desc=run)
        scores = evaluate_student(model, task.test_images, batch, device)
        results[run] = {head: D.accuracy(s, labels) for head, s in scores.items()}
        per_class[run] = D.per_class_accuracy(scores["fused"], labels, task.classes)
        with io.atomic_dir(directory) as folder:
            classifier.save(model.cpu(), folder, classifier.student_meta(model, task.classes, distilled=run == "student",
                                                                         params=params.distill.model_dump(mode="json")))
    summary = {
        "task": task.name, "classes": len(task.classes), "teacher": teacher.name, "mode": dp.mode,
        "teacher_accuracy": D.accuracy(teacher_test, labels),
        "student": results["student"], "baseline": results["baseline"],
        "gain": round(results["student"]["fused"] - results["baseline"]["fused"], 4),
        "params": {"teacher": teacher.parameters, "student": parameter_count(model)},
        "student_config": dataclasses.asdict(config),
    }
    io.write_json(paths.DISTILL_PER_CLASS, per_class)
    io.write_json(paths.DISTILL, summary)
    print(f"teacher {summary['teacher_accuracy']:.2f}% | student fused {results['student']['fused']:.2f}% "
          f"(class {results['student']['class']:.2f}, dist {results['student']['dist']:.2f}) | "
          f"without distillation {results['baseline']['fused']:.2f}%")


if __name__ == "__main__":
    main()
