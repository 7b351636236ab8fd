"""Benchmark name -> task splits and pretraining corpus, and the prepared tasks as the stages read them.

- `domains` (the default): six image domains standing in for MTIL's data sets (pipeline/data/domains).
- `facets`: the first embedded world, where every image carries six facets and each facet is a task
  (pipeline/data/facets.py); the compression branch's default target (`count+colour`) comes from it.
- `folder`: users' own images under `data.root` (pipeline/data/folder.py).
- `mtil`: MTIL's eleven torchvision data sets under `data.root` (pipeline/data/mtil.py); no caption corpus.
- `fashion_mnist`: the compression branch's real-image target, torchvision's Fashion-MNIST under `target.root`
  (pipeline/data/fashion_mnist.py); a target benchmark only.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pipeline import paths
from pipeline.data.domains import build_domain_corpus, build_domain_task, domain_names
from pipeline.data.fashion_mnist import TASK as FASHION_MNIST_TASK, build_fashion_mnist_task, check_files
from pipeline.data.facets import build_facet_corpus, build_facet_task, facet_names, is_facet_task
from pipeline.data.folder import build_folder_corpus, build_folder_task
from pipeline.data.folder_pretrain import PRETRAIN_DIR, build_pretrain_corpus, pretrain_dir, pretrain_layout
from pipeline.data.mtil import build_mtil_task
from pipeline.data.mtil_sets import check_mtil_task
from pipeline.data.sources import concat
from pipeline.data.types import CaptionCorpus, TaskData, load_task
from pipeline.errors import InputError


def check_task_names(benchmark: str, root: str, names: list[str], key: str | None = None) -> None:
    """Fail before any compute if a task of params.yaml does not exist in the benchmark (`key` names the
    params key in the message; default `tasks.<name>`). Facet tasks may be joints of facets ('a+b')."""
    for name in names:
        where = key or f"tasks.{name}"
        if benchmark == "domains":
            if name not in domain_names():
                raise InputError(f"{where}: {name!r} is not a task of the domains benchmark ({', '.join(domain_names())})")
        elif benchmark == "facets":
            if not is_facet_task(name):
                known = ", ".join(facet_names())
                raise InputError(f"{where}: {name!r} is not a task of the facets benchmark (a facet or facets "
                                 f"joined by '+'; facets: {known})")
        elif benchmark == "folder":
            if name == PRETRAIN_DIR:
                raise InputError(f"{where}: {name!r} is reserved for E0's pretraining set "
                                 f"({pretrain_dir(root)}); give the task another folder name")
            for split in ("train", "test"):
                folder = Path(root) / name / split
                if not folder.is_dir():
                    raise InputError(f"{where}: folder {folder} does not exist (data.root is {root!r})")
        elif benchmark == "mtil":
            check_mtil_task(root, name, where)
        elif benchmark == "fashion_mnist":
            if name != FASHION_MNIST_TASK:
                raise InputError(f"{where}: {name!r} is not a task of the fashion_mnist benchmark (its one task: "
                                 f"{FASHION_MNIST_TASK})")
            check_files(root)


def check_corpus_source(data, needed_by: str | None) -> None:
    """Folder benchmark: fail before any compute if ``<root>/pretrain/`` holds neither or both layouts, or
    if E0's caption corpus has no source (no ``pretrain/``, ``data.pretrain_on_tasks`` off) although
    ``needed_by`` (the params key and value that reads the corpus; None: nothing does) needs one. MTIL has
    no caption corpus at all (ZSCL's reference pairs are Conceptual Captions, not part of it)."""
    if data.benchmark == "mtil" and needed_by:
        raise InputError(f"{needed_by} needs E0's caption corpus, but the mtil benchmark has none (nothing is "
                         f"downloaded): E0 must come from model.pretrained (an open_clip tag such as openai, or a "
                         f"checkpoint file), with a train.method that reads no corpus")
    if data.benchmark != "folder":
        return
    folder = pretrain_dir(data.root)
    if folder.exists():
        pretrain_layout(folder)
    elif needed_by and not data.pretrain_on_tasks:
        raise InputError(f"{needed_by} needs E0's caption corpus, but folder {folder} does not exist: add it "
                         f"(class folders or captions.tsv), or set data.pretrain_on_tasks: true to use the "
                         f"tasks' training images (E0's zero-shot row then has seen every task)")


def build_task(data, name: str, train_per_class: int | None = None, test_per_class: int | None = None,
               imbalance: float = 1.0, benchmark: str | None = None, root: str | None = None) -> TaskData:
    """A task of `benchmark` (default data.benchmark); the per-class sizes default to data's (fashion_mnist:
    None is every image), the imbalance (facets only) to none; `root`: fashion_mnist's (target.root)."""
    benchmark = benchmark or data.benchmark
    if benchmark == "fashion_mnist":
        return build_fashion_mnist_task(root, image_size=data.image_size, train_per_class=train_per_class,
                                        test_per_class=test_per_class, seed=data.seed)
    train_per_class, test_per_class = train_per_class or data.train_per_class, test_per_class or data.test_per_class
    if benchmark == "domains":
        return build_domain_task(name, image_size=data.image_size, train_per_class=train_per_class,
                                 test_per_class=test_per_class, seed=data.seed)
    if benchmark == "facets":
        return build_facet_task(name, image_size=data.image_size, train_per_class=train_per_class,
                                test_per_class=test_per_class, seed=data.seed, imbalance=imbalance)
    if benchmark == "mtil":
        return build_mtil_task(Path(data.root), name, image_size=data.image_size, few_shot=data.few_shot,
                               seed=data.seed)
    return build_folder_task(Path(data.root) / name, name=name, image_size=data.image_size, templates=list(data.templates))


def build_corpus(data, names: list[str]) -> CaptionCorpus:
    """E0's caption corpus. Folder benchmark: ``<root>/pretrain/`` when present, then, with the opt-in
    ``data.pretrain_on_tasks``, the tasks' training images; with neither it is empty (data/corpus still
    exists for DVC), and Params.load has already refused any params that read it. MTIL: always empty."""
    if data.benchmark == "domains":
        return build_domain_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed,
                                   templates=data.corpus_templates, template_names=data.corpus_template_names)
    if data.benchmark == "facets":
        return build_facet_corpus(image_size=data.image_size, size=data.corpus_size, seed=data.seed)
    kw = dict(image_size=data.image_size, templates=list(data.templates), per_class=data.corpus_per_class)
    parts = []
    if data.benchmark == "folder" and pretrain_dir(data.root).exists():
        parts.append(build_pretrain_corpus(pretrain_dir(data.root), **kw))
    if data.pretrain_on_tasks:  # folder only (DataParams)
        parts.append(build_folder_corpus(Path(data.root), names, **kw))
    captions = [c for p in parts for c in p.captions]
    if not parts:
        return CaptionCorpus(images=torch.empty((0, 3, data.image_size, data.image_size), dtype=torch.uint8), captions=captions)
    return CaptionCorpus(images=concat([p.images for p in parts]), captions=captions)


def load_tasks(names: list[str]) -> dict[str, TaskData]:
    """The prepared tasks, in the given (training) order."""
    return {name: load_task(paths.task_dir(name)) for name in names}
