"""Benchmarks -> prepared task splits and the caption corpus (see ``types`` for the on-disk format)."""

from .folder import build_folder_corpus, build_folder_task
from .synthetic import build_synthetic_corpus, build_synthetic_task, synthetic_facets
from .types import CaptionCorpus, TaskData, load_corpus, load_task, save_corpus, save_task

__all__ = [
    "CaptionCorpus", "TaskData", "build_folder_corpus", "build_folder_task", "build_synthetic_corpus",
    "build_synthetic_task", "load_corpus", "load_task", "save_corpus", "save_task", "synthetic_facets",
]
