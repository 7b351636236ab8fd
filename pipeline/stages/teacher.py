"""Stage `teacher`: train the CNN teacher (`teacher.arch`, timm or torchvision) on the target task, on the labels
alone, through the branch's one training loop; its test accuracy, overall and per class."""
from __future__ import annotations

from pipeline import io, metrics, paths, runtime
from pipeline.compression.run import train_teacher
from pipeline.data import load_task
from pipeline.models import classifier
from pipeline.stages.common import live, load_params, setup_runtime, stage


@stage
def main(argv):
    params = load_params("timm")
    tp = params.teacher
    task = load_task(paths.TARGET)
    device = setup_runtime(params.runtime, runtime.stable_seed(tp.seed, "teacher"))
    with live(paths.TEACHER_LIVE) as logger:
        model, logged, accuracy, scores = train_teacher(params, task, device, logger)
    n_params = sum(p.numel() for p in model.parameters())
    with io.atomic_dir(paths.CNN) as folder:
        classifier.save(model, folder, classifier.cnn_meta(tp.arch, tp.stem_stride, task.classes, final_loss=logged["ce"],
                                                           params=params.teacher.model_dump(mode="json")))
    io.write_json(paths.TEACHER, {"arch": tp.arch, "parameters": n_params, "accuracy": accuracy,
                                  "per_class": metrics.per_class_top1(scores, task.test_labels, task.classes)})
    print(f"teacher {tp.arch} ({n_params:,} parameters): {accuracy:.2f}% on {task.name}")


if __name__ == "__main__":
    main()
