"""Stage `distill`: train the student (`distill.student`) from the teacher (`distill.teacher`) with the method
`distill.method`; its accuracy against the teacher's. The same student on the labels alone is the stage
`student_alone`, so a method sweep trains it once per seed (DVC's run-cache)."""
from __future__ import annotations

from pipeline import io, metrics, paths, runtime
from pipeline.compression import data as D
from pipeline.compression.run import train_and_test
from pipeline.compression.teachers import load_teacher
from pipeline.data import load_task
from pipeline.stages.common import live, load_params, setup_runtime, stage


@stage
def main(argv):
    params = load_params("timm")
    dp = params.distill
    task = load_task(paths.TARGET)
    device = setup_runtime(params.runtime, runtime.stable_seed(dp.seed, "distill"))
    teacher = load_teacher(params, task, device)
    with runtime.autocast(device, params.runtime.precision):
        teacher_test = D.predict(teacher.logits, task.test_images, params.eval.batch_size, device)
    with live(paths.DISTILL_LIVE) as logger:
        summary, per_class, cost = train_and_test(params, task, teacher, device, paths.STUDENT, logger,
                                            desc=f"{dp.method} {dp.student}")
    summary = {"task": task.name, "classes": len(task.classes), "teacher": teacher.name,
               "teacher_accuracy": metrics.top1(teacher_test, task.test_labels),
               "teacher_parameters": teacher.parameters, **summary}
    io.write_json(paths.DISTILL_PER_CLASS, {"teacher": metrics.per_class_top1(teacher_test, task.test_labels, task.classes),
                                            "student": per_class})
    io.write_json(paths.DISTILL, summary)
    io.write_json(paths.DISTILL_COST, cost)
    print(f"teacher {summary['teacher_accuracy']:.2f}% | student ({dp.method}, {dp.student}) {summary['accuracy']:.2f}% "
          f"({', '.join(f'{h} {a:.2f}' for h, a in summary['heads'].items())})")


if __name__ == "__main__":
    main()
