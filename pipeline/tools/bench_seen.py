"""`python -m pipeline.tools.bench_seen`: what `loss.dis_scope: seen` costs at MTIL's scale, and how far
`loss.dis_seen_sample` bounds it. Writes metrics/bench_seen.json. This is a command, not a stage: timings vary
from run to run. Take the figures on a quiet machine.

The setting is MTIL order I's last task: SUN397 (397 classes) after the ten others, about 1,200 classes seen,
each with ZSCL's prompt templates for its data set (pipeline/data/mtil_names.py), as the mtil benchmark trains
them. At task 11 that is about 8,600 prompts, against 794 for SUN397 alone. The data is synthetic
(pipeline/bench_synthetic.py, random weights, random images). The model is ViT-B-16 reduced to run on a CPU:
the same image and text token counts (224 px in patches of 16, context 77), narrower (`--vision-width`,
`--text-width`) and shallower (`--layers` in both towers). The two towers shrink alike, so the share of the
step that the text tower takes stays roughly ViT-B-16's. Each variant trains through the continual trainer's
own `TaskTraining.step`:
fine-tuning, dual-teacher with the patent's scope (`current`), with `seen`, and with `seen` and each K of
`--samples`. After `--warmup` steps, which compute the teachers' features, `--steps` steps are timed; the
JSON gives their median and its ratio to fine-tuning's.

    python -m pipeline.tools.bench_seen                      # the quiet-machine figure (minutes per variant)
    python -m pipeline.tools.bench_seen --class-fraction 0.02 --image-size 32 --vision-width 32 --text-width 32 \\
        --layers 1 --batch 4 --steps 1 --out /tmp/bench_seen.json     # the smoke run the tests use
"""
from __future__ import annotations

import argparse
import copy
import math

import torch

from pipeline import io, paths
from pipeline.tools.bench_gpu import fresh_peak, summary, timed_task_steps
from pipeline.tools.bench_synthetic import SyntheticOutputs, synthetic_inputs, synthetic_task
from pipeline.params import LIBRARIES, Params, TaskLink
from pipeline.continual import get_method
from pipeline.data.mtil_names import ORDER_I, TEMPLATES
from pipeline.models import clip as clip_lib
from pipeline.stages.common import load_params, setup_runtime, stage
from pipeline.stages.prototypes import e0_outputs
from pipeline.tools.machine import machine

OUT = paths.METRICS / "bench_seen.json"
ARCH = "bench-vit-b-16-narrow"
# Classes of MTIL's data sets (ZSCL's class lists): 1,201 in all.
CLASSES = {"Aircraft": 100, "Caltech101": 101, "CIFAR100": 100, "DTD": 47, "EuroSAT": 10, "Flowers": 102,
           "Food": 101, "MNIST": 10, "OxfordPet": 37, "StanfordCars": 196, "SUN397": 397}


def register_arch(args) -> None:
    """ViT-B-16's geometry at the given widths and depth, as an open_clip config of this process only."""
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS[ARCH] = {
        "embed_dim": args.text_width,
        "vision_cfg": {"image_size": args.image_size, "layers": args.layers, "width": args.vision_width,
                       "head_width": 32, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": args.text_width,
                     "heads": max(1, args.text_width // 32), "layers": args.layers},
    }


def variants(samples: list[int], full_seen: bool = True) -> dict[str, dict]:
    out = {"finetune": {"train.method": "finetune"},
           "dual_teacher current": {"train.method": "dual_teacher", "loss.dis_scope": "current"}}
    if full_seen:  # every class seen: ~20x a fine-tuning step here, the run's longest by far
        out["dual_teacher seen"] = {"train.method": "dual_teacher", "loss.dis_scope": "seen"}
    for k in samples:
        out[f"dual_teacher seen K={k}"] = {"train.method": "dual_teacher", "loss.dis_scope": "seen", "loss.dis_seen_sample": k}
    return out


def mtil_params(params: Params, sets: dict) -> Params:
    """params.yaml with `sets`, chained over MTIL order I. This is a copy that is not validated again: the
    tasks are synthetic, and no benchmark's folders exist for them."""
    chain = {name: TaskLink(prev=prev) for name, prev in zip(ORDER_I, ["e0", *ORDER_I[:-1]])}
    return params.with_overrides(sets, source="bench_seen").model_copy(update={"tasks": chain})


@stage
def main(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_seen", description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--vision-width", type=int, default=96, help="ViT-B-16: 768")
    parser.add_argument("--text-width", type=int, default=64, help="ViT-B-16: 512")
    parser.add_argument("--layers", type=int, default=4, help="both towers (ViT-B-16: 12)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--samples", type=int, nargs="*", default=[32, 128, 512], help="values of loss.dis_seen_sample")
    parser.add_argument("--class-fraction", type=float, default=1.0, help="scale every task's classes (tests)")
    parser.add_argument("--no-full-seen", dest="full_seen", action="store_false",
                        help="leave out `seen` over every class (more --steps for the others in the same time)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    params = load_params(*LIBRARIES)
    device = setup_runtime(params.runtime, 0)
    register_arch(args)
    generator = torch.Generator().manual_seed(0)
    classes = {n: max(2, math.ceil(c * args.class_fraction)) for n, c in CLASSES.items()}
    tasks = {n: synthetic_task(n, c, max(args.batch, c), args.image_size, TEMPLATES[n], generator) for n, c in classes.items()}
    torch.manual_seed(0)
    model = clip_lib.build(ARCH, args.image_size)  # random weights: E0, E_{m-1} and every student's start
    outputs = {n: e0_outputs(clip_lib.freeze(copy.deepcopy(model)), t, params.eval.batch_size) for n, t in tasks.items()}
    last = ORDER_I[-1]
    results = {}
    for name, sets in variants(args.samples, args.full_seen).items():
        fresh_peak(device)
        student = copy.deepcopy(model)
        ctx = synthetic_inputs(mtil_params(params, sets), sets["train.method"], last, tasks, student, device,
                               SyntheticOutputs(model, outputs, device=device))
        times = timed_task_steps(get_method(sets["train.method"])(ctx), args, device)
        results[name] = summary(times, args.batch, device)
        print(f"  {name:28s} step {results[name]['median_ms']:10.1f} ms", flush=True)
    base = results["finetune"]["median_ms"]
    for entry in results.values():
        entry["vs_finetune"] = round(entry["median_ms"] / base, 3)
    prompts = {n: classes[n] * len(TEMPLATES[n]) for n in classes}
    io.write_json(args.out, {
        "setting": {"task": last, "seen_classes": sum(classes.values()), "task_classes": classes[last],
                    "seen_prompts": sum(prompts.values()), "task_prompts": prompts[last], "batch": args.batch,
                    "image_size": args.image_size, "vision_width": args.vision_width, "text_width": args.text_width,
                    "layers": args.layers, "steps": args.steps, "threads": params.runtime.threads,
                    "machine": machine(),
                    "command": "python -m pipeline.tools.bench_seen " + " ".join(argv)},
        "methods": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
