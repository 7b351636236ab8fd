"""Benchmark name -> task splits and pretraining corpus, and the prepared tasks as the stages read them."""
from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.data.folder import build_folder_corpus, build_folder_task
from pipeline.data.synthetic import build_synthetic_corpus, build_synthetic_task, synthetic_facets
from pipeline.data.types import CaptionCorpus, TaskData, load_task

def check_task_names(benchmark: str, root: str | None, names: list[str]) -> None:
    """Fail before any compute if a task of params.yaml does not exist in the benchmark."""
    if benchmark == "synthetic":
        known = synthetic_facets()
        for name in names:
            if name not in known:
                raise ValueError(f"tasks.{name}: not a task of the synthetic benchmark; known: {', '.join(known)}")
    elif benchmark == "folder":
        for name in names:
            for split in ("train", "test"):
                folder = Path(root) / name / split
                if not folder.is_dir():
                    raise ValueError(f"tasks.{name}: folder {folder} does not exist")


def build_task(data, name: str) -> TaskData:
    if data.benchmark == "synthetic":
        return build_synthetic_task(
            name, image_size=data.image_size, train_per_class=data.train_per_class, test_per_class=data.test_per_class, seed=data.seed
        )
    return build_folder_task(Path(data.root) / name, name=name, image_size=data.image_size, templates=list(data.templates))


def build_corpus(data, names: list[str]) -> CaptionCorpus:
    if data.benchmark == "synthetic":
        return build_synthetic_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed)
    return build_folder_corpus(Path(data.root), names, image_size=data.image_size, templates=list(data.templates), per_class=data.corpus_per_class)


def load_tasks(names: list[str]) -> dict[str, TaskData]:
    """The prepared tasks, in the given (training) order."""
    return {name: load_task(paths.task_dir(name)) for name in names}
