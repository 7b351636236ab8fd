"""Classify images with a trained model: `python -m pipeline.tools.predict --task flowers IMAGE...`.

By default the final model of the task chain is used (models/<last task>); `--model e0` gives E0
zero-shot, `--model NAME` the model after task NAME. Classes and prompts come from the prepared task.
`--model student` (or `student_alone`, `cnn`) uses a classifier of the compression branch instead, with
the classes it was trained on (no `--task`)."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from pipeline import io, paths
from pipeline.params import LIBRARIES
from pipeline.data.images import load_image
from pipeline.evaluation import probabilities
from pipeline.models import classifier
from pipeline.models import clip as clip_lib
from pipeline.errors import InputError, MissingInput
from pipeline.stages.common import load_params, stage


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--task", help="task whose classes to choose from (a key of params.yaml tasks); not for student/cnn")
    parser.add_argument("--model", default=None, help="model folder name under models/ (default: the last task's)")
    parser.add_argument("--top", type=_positive, default=3, help="how many classes to print per image (>= 1)")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def predict(clip: clip_lib.Clip, classes: list[str], templates: list[str], images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, C) for uint8 images (N, 3, S, S), exactly as evaluation computes them."""
    return probabilities(clip, [[t.replace("{}", c) for t in templates] for c in classes], images, batch_size=256)


CLASSIFIER_KINDS = ("cnn", "student", "cohort")  # checkpoints of the compression branch (pipeline/models/classifier.py)


def classifier_kind(name: str | None) -> str | None:
    """'cnn', 'student' or 'cohort' when models/<name> is a compression-branch classifier, else None."""
    meta = paths.model_dir(name) / classifier.META if name else None
    return io.read_json(meta).get("kind") if meta is not None and meta.is_file() else None


def predict_classifier(name: str, images: list[Path], image_size: int) -> tuple[list[str], torch.Tensor]:
    model, meta = classifier.load(paths.model_dir(name))
    batch = torch.stack([torch.tensor(load_image(p, image_size)) for p in images])
    with torch.no_grad():
        probs = classifier.logits_of(model, classifier.image_input(batch)).softmax(dim=-1)
    return meta["classes"], probs


def show(paths_: list[Path], classes: list[str], probs: torch.Tensor, top: int) -> None:
    top = min(top, len(classes))
    for path, p in zip(paths_, probs):
        values, indices = p.topk(top)
        print(f"{path}: " + ", ".join(f"{classes[i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist())))


@stage
def main(argv: list[str]) -> None:
    args = parse(argv)
    params = load_params(*LIBRARIES)
    # open_clip warns on every model it builds that no pretrained weights were loaded: ours load right after.
    logging.getLogger().setLevel(logging.ERROR)
    if args.model is not None and not paths.model_dir(args.model).is_dir():  # named before asking for --task
        how = {"student": "make compress", "student_alone": "make compress", "cnn": "make compress",
               "cohort": "make cohort"}.get(args.model, "make repro")  # models/<stage output>, by branch
        raise MissingInput(f"--model: no model {args.model!r} in {paths.MODELS}/ (has its stage run? `{how}`)")
    if classifier_kind(args.model) in CLASSIFIER_KINDS:
        if args.task is not None:
            raise InputError(f"--task: models/{args.model} classifies its own classes; leave --task out")
        classes, probs = predict_classifier(args.model, args.images, params.data.image_size)
        return show(args.images, classes, probs, args.top)
    if args.task is None:
        raise InputError(f"--task: which task's classes to choose from? one of {', '.join(params.task_names)}")
    if args.task not in params.tasks:
        raise InputError(f"--task: {args.task!r} is not a task of params.yaml ({', '.join(params.task_names)})")
    meta = io.read_json(paths.task_dir(args.task) / "task.json")
    clip = clip_lib.load(paths.model_dir(args.model or params.task_names[-1]))
    images = torch.stack([torch.tensor(load_image(p, clip.image_size)) for p in args.images])
    show(args.images, meta["classes"], predict(clip, meta["classes"], meta["templates"], images), args.top)


if __name__ == "__main__":
    main()
