"""Benchmarks -> prepared task splits and the caption corpus (see ``types`` for the on-disk format)."""

from .types import CaptionCorpus, TaskData, load_corpus, load_task, save_corpus, save_task

__all__ = ["CaptionCorpus", "TaskData", "load_corpus", "load_task", "save_corpus", "save_task"]
