"""Benchmark name -> task splits and pretraining corpus, and the prepared tasks as the stages read them.

- `domains` (the default): six image domains standing in for MTIL's data sets (pipeline/data/domains).
- `facets`: the first embedded world, where every image carries six facets and each facet is a task
  (pipeline/data/facets.py); the compression branch's default target (`count+colour`) comes from it.
- `folder`: users' own images under `data.root` (pipeline/data/folder.py).
"""
from __future__ import annotations

from pathlib import Path

from pipeline import paths
from pipeline.data.domains import build_domain_corpus, build_domain_task, domain_names
from pipeline.data.facets import build_facet_corpus, build_facet_task, facet_names, is_facet_task
from pipeline.data.folder import build_folder_corpus, build_folder_task
from pipeline.data.types import CaptionCorpus, TaskData, load_task


def check_task_names(benchmark: str, root: str | None, names: list[str], key: str | None = None) -> None:
    """Fail before any compute if a task of params.yaml does not exist in the benchmark (`key` names the
    params key in the message; default `tasks.<name>`). Facet tasks may be joints of facets ('a+b')."""
    for name in names:
        where = key or f"tasks.{name}"
        if benchmark == "domains":
            if name not in domain_names():
                raise ValueError(f"{where}: {name!r} is not a task of the domains benchmark ({', '.join(domain_names())})")
        elif benchmark == "facets":
            if not is_facet_task(name):
                known = ", ".join(facet_names())
                raise ValueError(f"{where}: {name!r} is not a task of the facets benchmark (a facet or facets "
                                 f"joined by '+'; facets: {known})")
        elif benchmark == "folder":
            for split in ("train", "test"):
                folder = Path(root) / name / split
                if not folder.is_dir():
                    raise ValueError(f"{where}: folder {folder} does not exist")


def build_task(data, name: str, train_per_class: int | None = None, test_per_class: int | None = None,
               imbalance: float = 1.0, benchmark: str | None = None) -> TaskData:
    """A task of `benchmark` (default data.benchmark); the per-class sizes default to data's, the
    imbalance (facets only) to none."""
    benchmark = benchmark or data.benchmark
    train_per_class, test_per_class = train_per_class or data.train_per_class, test_per_class or data.test_per_class
    if benchmark == "domains":
        return build_domain_task(name, image_size=data.image_size, train_per_class=train_per_class,
                                 test_per_class=test_per_class, seed=data.seed)
    if benchmark == "facets":
        return build_facet_task(name, image_size=data.image_size, train_per_class=train_per_class,
                                test_per_class=test_per_class, seed=data.seed, imbalance=imbalance)
    return build_folder_task(Path(data.root) / name, name=name, image_size=data.image_size, templates=list(data.templates))


def build_corpus(data, names: list[str]) -> CaptionCorpus:
    if data.benchmark == "domains":
        return build_domain_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed)
    if data.benchmark == "facets":
        return build_facet_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed)
    return build_folder_corpus(Path(data.root), names, image_size=data.image_size, templates=list(data.templates), per_class=data.corpus_per_class)


def load_tasks(names: list[str]) -> dict[str, TaskData]:
    """The prepared tasks, in the given (training) order."""
    return {name: load_task(paths.task_dir(name)) for name in names}
