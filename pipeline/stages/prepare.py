"""Stage `prepare`: the benchmark's task splits, E0's caption corpus and ZSCL's reference set under data/."""
from __future__ import annotations

from tqdm import tqdm

from pipeline import io, paths
from pipeline.data import loader, save_corpus, save_task
from pipeline.data.benchmarks import build_corpus, build_task
from pipeline.data.reference import build_reference, save_reference
from pipeline.data.validation import carve_validation
from pipeline.stages.common import load_params, stage


@stage
def main(argv):
    params = load_params()
    names = params.task_names
    loader.configure(params.runtime.workers, pin_memory=False)  # folder, mtil: every image is decoded once
    # Build everything before writing anything, so a bad image in the last task leaves old data intact.
    # data.val_per_class > 0 (selection runs): each task's evaluation split is carved from its training images
    tasks = {name: carve_validation(build_task(params.data, name), params.data.val_per_class, params.data.seed)
             for name in tqdm(names, desc="prepare tasks")}
    corpus = build_corpus(params.data, names)
    d = params.data
    reference = build_reference(image_size=d.image_size, images=d.reference_images, captions=d.reference_captions, seed=d.seed)
    with io.atomic_dir(paths.TASKS) as folder:  # no folder of a task removed from params.yaml stays
        for name, task in tasks.items():
            save_task(task, folder / paths.task_dir(name).name)
    with io.atomic_dir(paths.CORPUS) as folder:
        save_corpus(corpus, folder)
    with io.atomic_dir(paths.REFERENCE) as folder:
        save_reference(reference, folder)
    print(f"prepared {len(tasks)} tasks ({', '.join(names)}), {len(corpus.captions)} captions and a reference set "
          f"of {len(reference.images)} images and {len(reference.captions)} captions")


if __name__ == "__main__":
    main()
