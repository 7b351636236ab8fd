"""Stage `prepare`: the benchmark's task splits and E0's caption corpus under data/."""
from __future__ import annotations

import shutil

from tqdm import tqdm

from pipeline import paths
from pipeline.data import save_corpus, save_task
from pipeline.data.benchmarks import build_corpus, build_task
from pipeline.stages.common import load_params, stage


@stage
def main(argv):
    params = load_params()
    names = params.task_names
    # Build everything before writing anything, so a bad image in the last task leaves old data intact.
    tasks = {name: build_task(params.data, name) for name in tqdm(names, desc="prepare tasks")}
    corpus = build_corpus(params.data, names)
    for name, task in tasks.items():
        save_task(task, paths.task_dir(name))
    save_corpus(corpus, paths.CORPUS)
    for stale in paths.TASKS.iterdir():  # tasks removed from params.yaml
        if stale.is_dir() and stale.name not in tasks:
            shutil.rmtree(stale)
    print(f"prepared {len(tasks)} tasks ({', '.join(names)}) and {len(corpus.captions)} captions")


if __name__ == "__main__":
    main()
