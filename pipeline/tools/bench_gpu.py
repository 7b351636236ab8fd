"""`make bench-gpu`: training throughput and peak GPU memory of the continual methods' steps, and inference
throughput of the compression students, on a GPU: metrics/bench_gpu.json. A command, not a stage (timings
vary from run to run).

- Training: one step of `finetune`, `dual_teacher` and `zscl` on open_clip `--arch` (ViT-B-16 by default,
  random weights: never a download) at `--batch` images of `--image-size` px in `--precision` (bf16 autocast
  by default), on synthetic data (pipeline/tools/bench_synthetic.py): the task after the first of params.yaml's
  chain (so the dual teacher has both teachers and, with `loss.dis_scope: seen`, two tasks' prototypes),
  `--classes` classes with params.yaml's prompt templates, random uint8 images; ZSCL's reference pairs from
  a random caption corpus. Each method is built through the registry on its TaskInputs and stepped by the
  project's one trainer's `Trainer.step` (pipeline/training.py, fed by pipeline/continual/trainer.py), with params.yaml's loss and
  optimiser settings: the step timed is the step trained. After `--warmup` steps (E_{m-1}'s features are
  computed with the inputs, before them), `--steps` steps are timed one by one, the device synchronised around each; the median
  gives images/s. Peak memory: `torch.cuda.max_memory_allocated`, reset before each method (teacher
  features and ZSCL's E0 included, as in training).
- Inference: the token student (patch `--token-patch`, the rest as `distill.token.student`) and the CNN
  students of `compare.distill_variants` (as configured there, stem stride included), `--infer-batch`
  random images per forward, no gradient, same precision, timed the same way.

On a machine without CUDA the defaults are refused; `--device cpu --precision fp32` with a tiny model is the
smoke run the tests use (its figures mean nothing)."""
from __future__ import annotations

import argparse
import copy
import gc
import platform
import statistics
import time
from collections.abc import Callable

import torch

from pipeline import io, optim, paths, runtime
from pipeline.tools.bench_synthetic import SyntheticOutputs, synthetic_corpus, synthetic_inputs, synthetic_task
from pipeline.compression import students
from pipeline.params.compression import TOKEN
from pipeline.params import LIBRARIES, Params
from pipeline.continual import get_method
from pipeline.continual.trainer import prepare
from pipeline.errors import InputError
from pipeline.models import classifier
from pipeline.models import clip as clip_lib
from pipeline.stages.common import load_params, setup_runtime, stage
from pipeline.stages.prototypes import e0_outputs

METHODS = ("finetune", "dual_teacher", "zscl")
CPU_FORM = ("python -m pipeline.tools.bench_gpu --device cpu --precision fp32 --arch synth-rn-tiny --image-size 32 "
            "--batch 4 --classes 5 --train-images 16 --steps 2 --warmup 1 --infer-batch 8 --out /tmp/bench_gpu.json")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> list[float]:
    """Wall seconds of `repeats` calls of `fn`, each from a synchronised device to a synchronised device."""
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float], images: int, device: torch.device) -> dict:
    q1, median, q3 = statistics.quantiles(times, n=4)
    return {"images_per_s": round(images / median, 1), "median_ms": round(1000 * median, 2),
            "q1_ms": round(1000 * q1, 2), "q3_ms": round(1000 * q3, 2), "peak_mb": runtime.peak_memory_mb(device)}


def timed_task_steps(method, args, device: torch.device) -> list[float]:
    """Seconds of each of `args.steps` training steps of a continual `method` on its task (batch `args.batch`),
    after `args.warmup` untimed ones: the trainer's own step (the batch, the method's step, its after_step)
    and the schedule's, so the step timed is the step trained."""
    run = prepare(method)
    order = enumerate(optim.batches(len(method.ctx.task.train_labels), args.batch, args.warmup + args.steps, 0))

    def step():
        i, indices = next(order)
        run.step(i, (indices, None))
        run.schedule.step()

    timed(step, args.warmup, device)
    return timed(step, args.steps, device)


def fresh_peak(device: torch.device) -> None:
    """Free what the previous measurement left and restart CUDA's peak (the CPU's peak RSS cannot restart)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def bench_training(params: Params, args, device: torch.device) -> dict:
    """Images/s and peak memory of one training step of every method of METHODS (module docstring)."""
    names = params.task_names
    task_name = names[min(1, len(names) - 1)]
    generator = torch.Generator().manual_seed(0)
    tasks = {n: synthetic_task(n, args.classes, args.train_images, args.image_size, params.data.templates, generator)
             for n in names[: names.index(task_name) + 1]}
    torch.manual_seed(0)
    model = clip_lib.build(args.arch, args.image_size)  # random weights: E0, E_{m-1} and every student's start
    e0 = clip_lib.freeze(copy.deepcopy(model))
    e0.model.to(device)
    outputs = {n: e0_outputs(e0, t, params.eval.batch_size, args.precision) for n, t in tasks.items()}
    del e0
    # zscl as published scores each batch against the whole caption pool (data.reference_captions)
    corpus = synthetic_corpus(max(4 * params.loss.zscl_ref_batch, params.data.reference_captions), args.image_size, generator)
    stage = SyntheticOutputs(model, outputs, corpus, device)
    results = {}
    for name in METHODS:
        fresh_peak(device)
        student = copy.deepcopy(model)
        student.model.to(device)
        ctx = synthetic_inputs(params, name, task_name, tasks, student, device, stage)
        results[name] = summary(timed_task_steps(get_method(name)(ctx), args, device), args.batch, device)
        del ctx, student
        print(f"  {name:14s} {results[name]['images_per_s']:9.1f} images/s  step {results[name]['median_ms']:8.2f} ms"
              f"  peak {results[name]['peak_mb']:9.1f} MB")
    task = tasks[task_name]
    setting = {"task": task_name, "seen_tasks": len(tasks), "classes": args.classes, "templates": len(task.templates),
               "train_images": len(task.train_labels), "zscl_ref_batch": params.loss.zscl_ref_batch,
               "dis_scope": params.loss.dis_scope}
    return {"setting": setting, "methods": results}


def student_params(params: Params, args) -> dict[str, Params]:
    """The token student and every CNN student of compare.distill_variants (the first variant of each), as
    params whose `distill` builds it at `--image-size`."""
    size = {"data.image_size": args.image_size}
    token = {"distill.student": TOKEN, "distill.method": TOKEN, "distill.stem_stride": None,
             "distill.token.student.patch_size": args.token_patch}
    out = {TOKEN: params.with_overrides({**size, **token}, source="--token-patch")}
    for variant, sets in params.compare.distill_variants.items():
        student = sets.get("distill.student", params.distill.student)
        if student not in out:
            out[student] = params.with_overrides({**size, **sets}, source=f"compare.distill_variants.{variant}")
    return out


@torch.no_grad()
def bench_inference(params: Params, args, device: torch.device) -> dict:
    """Images/s and peak memory of every student's forward pass on `--infer-batch` images."""
    results = {}
    for name, sp in student_params(params, args).items():
        fresh_peak(device)
        torch.manual_seed(0)
        model = students.build(sp.distill, args.image_size, args.classes).to(device).eval()
        images = torch.randint(0, 256, (args.infer_batch, 3, args.image_size, args.image_size), dtype=torch.uint8,
                               device=device)

        def forward():
            with runtime.autocast(device, args.precision):
                classifier.logits_of(model, classifier.image_input(images))

        timed(forward, args.warmup, device)
        results[name] = {"stem_stride": sp.distill.stem_stride if name != TOKEN else None,
                         "parameters": sum(p.numel() for p in model.parameters()),
                         **summary(timed(forward, args.steps, device), args.infer_batch, device)}
        if name == TOKEN:
            results[name]["patch_size"] = args.token_patch
        del model, images, forward
        print(f"  {name:34s} {results[name]['images_per_s']:10.1f} images/s  peak {results[name]['peak_mb']:9.1f} MB")
    return results


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16", help="open_clip architecture, random weights (default ViT-B-16)")
    parser.add_argument("--batch", type=int, default=64, help="training images per step (default 64)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=100, help="classes of each synthetic task (default 100)")
    parser.add_argument("--train-images", type=int, default=1024, help="synthetic training images per task")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (and inference batches) of each, >= 2")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them, >= 1")
    parser.add_argument("--infer-batch", type=int, default=256, help="images per student forward (default 256)")
    parser.add_argument("--token-patch", type=int, default=16, help="the token student's patch size (DeiT's 16)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--precision", choices=list(runtime.AUTOCAST_DTYPES), default="bf16")
    parser.add_argument("--out", default=str(paths.BENCH_GPU))
    args = parser.parse_args(argv)
    if args.steps < 2 or args.warmup < 1 or min(args.batch, args.classes, args.infer_batch, args.train_images) < 1:
        parser.error("--steps must be >= 2 (quartiles), --warmup >= 1 (the first step: allocations, kernel choices), "
                     "--batch, --classes, --infer-batch and --train-images >= 1")
    return args


@stage
def main(argv):
    args = parse(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"bench_gpu needs a GPU (--device cuda) and torch finds no CUDA device here; the CPU smoke "
                         f"run (its figures mean nothing): {CPU_FORM}")
    if args.precision != "fp32" and args.device != "cuda":
        raise InputError(f"--precision {args.precision} needs a CUDA device, as runtime.precision does; on the CPU "
                         f"use --precision fp32")
    params = load_params(*LIBRARIES).with_overrides(
        {"model.arch": args.arch, "train.batch_size": args.batch, "train.steps": args.warmup + args.steps,
         "train.warmup_steps": 0,  # no lr warm-up (it may not outlast the run): the timing is the same
         "runtime.device": args.device, "runtime.precision": args.precision}, source="bench_gpu")
    device = setup_runtime(params.runtime, 0)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"{gpu or platform.processor() or platform.machine()}, {args.precision}, torch {torch.__version__}")
    print(f"training {args.arch} at {args.image_size} px, batch {args.batch}:")
    train = bench_training(params, args, device)
    print(f"inference of the students, batch {args.infer_batch}:")
    inference = bench_inference(params, args, device)
    methods = train["methods"]
    out = {
        "setup": {"device": gpu or f"cpu ({platform.machine()})", "device_type": device.type,
                  "torch": torch.__version__, "cuda": torch.version.cuda if gpu else None,
                  "precision": args.precision, "dtype": str(runtime.AUTOCAST_DTYPES[args.precision] or torch.float32),
                  "tf32": device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32,
                  "deterministic": torch.are_deterministic_algorithms_enabled(),
                  "arch": args.arch, "image_size": args.image_size, "batch": args.batch, "infer_batch": args.infer_batch,
                  "steps": args.steps, "warmup": args.warmup, "threads": params.runtime.threads,
                  "peak_memory": "torch.cuda.max_memory_allocated, reset before each" if gpu else
                                 "the process's peak resident set (ru_maxrss): never reset, so it only grows"},
        "train": train,
        "dual_teacher_per_finetune": round(methods["dual_teacher"]["images_per_s"] / methods["finetune"]["images_per_s"], 3),
        "inference": inference,
    }
    io.write_json(args.out, out)
    print(f"dual_teacher / finetune throughput: {out['dual_teacher_per_finetune']}x -> {args.out}")


if __name__ == "__main__":
    main()
