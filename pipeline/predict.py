"""Classify images with a trained model: `python -m pipeline.predict --task shape IMAGE...`.

By default the final model of the task chain is used (models/<last task>); `--model e0` gives E0
zero-shot, `--model NAME` the model after task NAME. Classes and prompts come from the prepared task."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pipeline import io, paths
from pipeline.data.folder import load_image
from pipeline.evaluation import probabilities
from pipeline.models import clip as clip_lib
from pipeline.stages.common import load_params, stage


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.predict", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.add_argument("--task", required=True, help="task whose classes to choose from (a key of params.yaml tasks)")
    parser.add_argument("--model", default=None, help="model folder name under models/ (default: the last task's)")
    parser.add_argument("--top", type=int, default=3, help="how many classes to print per image")
    return parser.parse_args(argv)


def predict(clip: clip_lib.Clip, classes: list[str], templates: list[str], images: torch.Tensor) -> torch.Tensor:
    """Class probabilities (N, C) for uint8 images (N, 3, S, S), exactly as evaluation computes them."""
    return probabilities(clip, [[t.replace("{}", c) for t in templates] for c in classes], images, batch_size=256)


@stage
def main(argv: list[str]) -> None:
    args = parse(argv)
    params = load_params()
    if args.task not in params.tasks:
        raise ValueError(f"--task: {args.task!r} is not a task of params.yaml ({', '.join(params.task_names)})")
    meta = io.read_json(paths.task_dir(args.task) / "task.json")
    clip = clip_lib.load(paths.model_dir(args.model or params.task_names[-1]))
    images = torch.stack([torch.tensor(load_image(p, clip.image_size)) for p in args.images])
    probs = predict(clip, meta["classes"], meta["templates"], images)
    top = min(args.top, len(meta["classes"]))
    for path, p in zip(args.images, probs):
        values, indices = p.topk(top)
        print(f"{path}: " + ", ".join(f"{meta['classes'][i]} {v:.3f}" for v, i in zip(values.tolist(), indices.tolist())))


if __name__ == "__main__":
    main()
