"""Every file and folder a stage reads or writes, named once (relative to the repository root)."""
from __future__ import annotations

from pathlib import Path

PARAMS = Path("params.yaml")

DATA = Path("data")
# check: a constant stamp every stage depends on (through prepare and target), written once params.yaml and the
# data it names are valid; constant, so a params change reruns check alone and then only the stages that read it
CHECKED = DATA / "checked"
TASKS = DATA / "tasks"  # prepare: one folder per task (task.json, train/test safetensors)
CORPUS = DATA / "corpus"  # prepare: E0's pretraining images and captions
REFERENCE = DATA / "reference"  # prepare: ZSCL's reference images and unpaired caption pool (no task's)
PROTOTYPES = DATA / "prototypes"  # prototypes: per task, E0's prototypes and text features, and its image features (.npy)
# train@<task>: E_{m-1}'s features of the task's images, one .npy per producer (pipeline/continual/teacher_cache.py)
FEATURE_CACHE = Path(".cache") / "teacher_features"

TARGET = DATA / "target"  # target: the compression branch's classification task (a task folder)

MODELS = Path("models")  # models/e0 from pretrain, models/<task> from train@<task>
CNN = MODELS / "cnn"  # teacher: the CNN teacher (timm)
STUDENT = MODELS / "student"  # distill: the distilled student
STUDENT_ALONE = MODELS / "student_alone"  # student_alone: the same student trained on the labels alone
COHORT = MODELS / "cohort"  # cohort: the networks trained together (cohort.method), or alone

METRICS = Path("metrics")
ZERO_SHOT = METRICS / "zero_shot.json"  # zero_shot: E0's accuracy on the tasks, row 0 of the accuracy matrix
PRETRAIN_LIVE = METRICS / "pretrain"  # DVCLive curves of pretraining
TASK_ROWS = METRICS / "tasks"  # train@<task>: the row of the accuracy matrix after <task>
TRAIN_LIVE = METRICS / "train"  # DVCLive curves, one folder per task
TASK_COST = METRICS / "cost"  # train@<task>: wall time and peak memory of the task's training
CL = METRICS / "cl.json"  # evaluate: Transfer / Average / Last
MATRIX = METRICS / "accuracy_matrix.json"
PLOTS = METRICS / "plots"  # evaluate: heatmap and per-task curves
TEACHER = METRICS / "teacher.json"  # teacher: test accuracy, per class
TEACHER_LIVE = METRICS / "teacher"  # DVCLive curves of the teacher's training
DISTILL = METRICS / "distill.json"  # distill: the teacher's and the distilled student's accuracy
DISTILL_PER_CLASS = METRICS / "distill_per_class.json"
DISTILL_LIVE = METRICS / "distill"  # DVCLive curves of the distilled student's training
STUDENT_ALONE_METRICS = METRICS / "student_alone.json"  # student_alone: its accuracy, overall and per class
# Wall time per training step, apart from the accuracy files, which must depend on the params only.
DISTILL_COST = METRICS / "distill_cost.json"
STUDENT_ALONE_COST = METRICS / "student_alone_cost.json"
STUDENT_ALONE_LIVE = METRICS / "student_alone"
COHORT_METRICS = METRICS / "cohort.json"  # cohort: every network's accuracy and the ensemble's
COHORT_PER_CLASS = METRICS / "cohort_per_class.json"
COHORT_COST = METRICS / "cohort_cost.json"
COHORT_LIVE = METRICS / "cohort"
THROUGHPUT = METRICS / "throughput.json"  # `make bench`: CPU inference images/s of teacher and student
BENCH_STEPS = METRICS / "bench_steps.json"  # `make bench-steps`: step time of every compression method, interleaved
BENCH_GPU = METRICS / "bench_gpu.json"  # `make bench-gpu`: training and inference throughput, peak GPU memory
COMPARE = METRICS / "compare.json"
COMPARE_TABLE = METRICS / "compare.md"
COMPARE_ABLATION = METRICS / "compare_ablation.json"  # `make compare-ablation`: variants of dual_teacher
COMPARE_ABLATION_TABLE = METRICS / "compare_ablation.md"
COMPARE_DISTILL = METRICS / "compare_distill.json"  # `make compare-distill`: the branch's methods side by side
COMPARE_DISTILL_TABLE = METRICS / "compare_distill.md"
COMPARE_COHORT = METRICS / "compare_cohort.json"  # `make compare-cohort`: online methods on the same cohort
COMPARE_COHORT_TABLE = METRICS / "compare_cohort.md"
COMPARE_COHORT_PLOT = METRICS / "compare_cohort.png"
COMPARE_TOKEN = METRICS / "compare_token.json"  # `make compare-token`: the token student's ablation
COMPARE_TOKEN_TABLE = METRICS / "compare_token.md"
COMPARE_CURVES = METRICS / "compare_curves.json"  # average accuracy after each task, per variant
COMPARE_PLOT = METRICS / "compare_curves.png"


def task_dir(task: str) -> Path:
    return TASKS / task


def prototypes_features(task: str) -> Path:
    """E0's image features of a task's training images, (N, d) float32, read memory-mapped."""
    return PROTOTYPES / f"{task}.features.npy"


def prototypes_file(task: str) -> Path:
    return PROTOTYPES / f"{task}.safetensors"


def model_dir(name: str) -> Path:
    return MODELS / name


def method_state(name: str) -> Path:
    """Tensors a continual method keeps beside task `name`'s model (`Method.state()`)."""
    return model_dir(name) / "method_state.safetensors"


def task_row(task: str) -> Path:
    return TASK_ROWS / f"{task}.json"


def task_cost(task: str) -> Path:
    return TASK_COST / f"{task}.json"


def train_live(task: str) -> Path:
    return TRAIN_LIVE / task


def stale_task_outputs(chain: list[str]) -> dict[str, list[Path]]:
    """What train@<task> left of the tasks not in `chain` (after the chain shrank or the benchmark changed):
    DVC no longer knows these outputs, so it never removes them. A model folder counts when its model.json
    names a `prev` (a task's model: not e0 nor the compression branch's)."""
    stale: dict[str, list[Path]] = {}
    for folder, pattern in ((TASK_ROWS, "*.json"), (TASK_COST, "*.json"), (TRAIN_LIVE, "*"), (MODELS, "*")):
        for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
            name = path.stem if path.suffix == ".json" else path.name
            if name in chain or name.startswith("."):
                continue
            if folder == MODELS and '"prev"' not in _text(path / "model.json"):
                continue
            stale.setdefault(name, []).append(path)
    return stale


def _text(path: Path) -> str:
    return path.read_text() if path.is_file() else ""
