"""Every file and folder a stage reads or writes, named once (relative to the repository root)."""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

DATA = Path("data")
TASKS = DATA / "tasks"  # prepare: one folder per task (task.json, train/test safetensors)
CORPUS = DATA / "corpus"  # prepare: E0's pretraining images and captions
PROTOTYPES = DATA / "prototypes"  # prototypes: one safetensors per task (E0 prototypes + E0 features)

MODELS = Path("models")  # models/e0 from pretrain, models/<task> from train@<task>

METRICS = Path("metrics")
ZERO_SHOT = METRICS / "zero_shot.json"  # pretrain: row 0 of the accuracy matrix
PRETRAIN_LIVE = METRICS / "pretrain"  # DVCLive curves of pretraining
TASK_ROWS = METRICS / "tasks"  # train@<task>: the row of the accuracy matrix after <task>
TRAIN_LIVE = METRICS / "train"  # DVCLive curves, one folder per task
CL = METRICS / "cl.json"  # evaluate: Transfer / Average / Last
MATRIX = METRICS / "accuracy_matrix.json"
PLOTS = METRICS / "plots"  # evaluate: heatmap and per-task curves
COMPARE = METRICS / "compare.json"
COMPARE_TABLE = METRICS / "compare.md"


def task_dir(task: str) -> Path:
    return TASKS / task


def prototypes_file(task: str) -> Path:
    return PROTOTYPES / f"{task}.safetensors"


def model_dir(name: str) -> Path:
    return MODELS / name


def task_row(task: str) -> Path:
    return TASK_ROWS / f"{task}.json"


def train_live(task: str) -> Path:
    return TRAIN_LIVE / task
