"""Benchmark name -> task splits and pretraining corpus, and the prepared tasks as the stages read them."""
from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.data.folder import build_folder_corpus, build_folder_task
from pipeline.data.synthetic import build_synthetic_corpus, build_synthetic_task, is_synthetic_task, synthetic_facets
from pipeline.data.types import CaptionCorpus, TaskData, load_task


def check_task_names(benchmark: str, root: str | None, names: list[str], key: str | None = None) -> None:
    """Fail before any compute if a task of params.yaml does not exist in the benchmark (`key` names the
    params key in the message; default `tasks.<name>`). Synthetic tasks may be joints of facets ('a+b')."""
    for name in names:
        where = key or f"tasks.{name}"
        if benchmark == "synthetic":
            if not is_synthetic_task(name):
                known = ", ".join(synthetic_facets())
                raise ValueError(f"{where}: {name!r} is not a task of the synthetic benchmark (a facet or facets "
                                 f"joined by '+'; facets: {known})")
        elif benchmark == "folder":
            for split in ("train", "test"):
                folder = Path(root) / name / split
                if not folder.is_dir():
                    raise ValueError(f"{where}: folder {folder} does not exist")


def build_task(data, name: str, train_per_class: int | None = None, test_per_class: int | None = None,
               imbalance: float = 1.0) -> TaskData:
    """A task of the benchmark; the per-class sizes and imbalance (synthetic only) default to data's."""
    if data.benchmark == "synthetic":
        return build_synthetic_task(
            name, image_size=data.image_size, train_per_class=train_per_class or data.train_per_class,
            test_per_class=test_per_class or data.test_per_class, seed=data.seed, imbalance=imbalance,
        )
    return build_folder_task(Path(data.root) / name, name=name, image_size=data.image_size, templates=list(data.templates))


def build_corpus(data, names: list[str]) -> CaptionCorpus:
    if data.benchmark == "synthetic":
        return build_synthetic_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed)
    return build_folder_corpus(Path(data.root), names, image_size=data.image_size, templates=list(data.templates), per_class=data.corpus_per_class)


def load_tasks(names: list[str]) -> dict[str, TaskData]:
    """The prepared tasks, in the given (training) order."""
    return {name: load_task(paths.task_dir(name)) for name in names}
