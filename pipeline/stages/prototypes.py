"""Stage `prototypes`: E0 features of every task's training images and class texts, and the initial class
prototypes (the teacher features E0 contributes to every later step)."""
from __future__ import annotations

import torch

from pipeline import io, paths, runtime
from pipeline.params import E0
from pipeline.continual.prototypes import initial_prototypes
from pipeline.continual.teacher_cache import save_array
from pipeline.data import TaskData
from pipeline.data.benchmarks import load_tasks
from pipeline.models import clip as clip_lib
from pipeline.stages.common import load_params, setup_runtime, stage


def e0_outputs(e0: clip_lib.Clip, task: TaskData, batch_size: int, precision: str = "fp32") -> dict[str, torch.Tensor]:
    """What this stage writes of one task, on the CPU: E0's `features` of its training images, its
    `text_features` of the class prompts and the initial `prototypes`. The towers run under `precision`'s
    autocast (none at all in fp32); the file holds fp32 whatever the precision."""
    device = e0.logit_scale.device
    with torch.no_grad(), runtime.autocast(device, precision):
        features = clip_lib.encode_images_batched(e0, task.train_images, batch_size, progress=f"E0 features {task.name}").float()
        text_features = clip_lib.class_text_features(e0, task.prompts()).float().cpu()
    prototypes = initial_prototypes(features, task.train_labels, len(task.classes))
    return {"prototypes": prototypes, "features": features, "text_features": text_features}


@stage
def main(argv):
    params = load_params("open_clip")
    device = setup_runtime(params.runtime, 0)
    tasks = load_tasks(params.task_names)
    e0 = clip_lib.freeze(clip_lib.load(paths.model_dir(E0)))
    e0.model.to(device)
    with io.atomic_dir(paths.PROTOTYPES) as folder:  # no file of a task removed from params.yaml stays
        for name, task in tasks.items():
            outputs = e0_outputs(e0, task, params.eval.batch_size, params.runtime.precision)
            # The image features as .npy, which the train stages read memory-mapped, one batch's rows at a time.
            save_array(folder / paths.prototypes_features(name).name, outputs.pop("features"))
            io.save_tensors(folder / paths.prototypes_file(name).name, outputs)
    print(f"prototypes of {len(tasks)} tasks written to {paths.PROTOTYPES}")


if __name__ == "__main__":
    main()
