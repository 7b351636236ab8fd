"""Stage `teacher`: train the timm CNN teacher on the target task; its test accuracy, overall and per class."""
from __future__ import annotations

from pipeline import io, paths, runtime
from pipeline.data import load_task
from pipeline.compression import data as D
from pipeline.compression.teacher_training import train_teacher
from pipeline.models import classifier
from pipeline.stages.common import live, load_params, stage


@stage
def main(argv):
    params = load_params("timm")
    tp = params.teacher
    task = load_task(paths.TARGET)
    device = runtime.setup(params.runtime, runtime.stable_seed(tp.seed, "teacher"))
    model = classifier.build_cnn(tp.arch, len(task.classes)).to(device)
    classifier.check_image_size(model, tp.arch, task.train_images.shape[-1])
    with live(paths.TEACHER_LIVE) as logger:
        final_loss = train_teacher(model, task, tp, device, logger)
    scores = D.predict(lambda b: model(classifier.image_input(b)), task.test_images, params.eval.batch_size, device)
    n_params = sum(p.numel() for p in model.parameters())
    with io.atomic_dir(paths.CNN) as folder:
        classifier.save(model, folder, {"kind": "cnn", "arch": tp.arch, "classes": task.classes,
                                        "final_loss": final_loss, "params": params.teacher.model_dump(mode="json")})
    accuracy = D.accuracy(scores, task.test_labels)
    io.write_json(paths.TEACHER, {"arch": tp.arch, "parameters": n_params, "accuracy": accuracy,
                                  "per_class": D.per_class_accuracy(scores, task.test_labels, task.classes)})
    print(f"teacher {tp.arch} ({n_params:,} parameters): {accuracy:.2f}% on {task.name}")


if __name__ == "__main__":
    main()
