"""`make bench`: CPU inference throughput (images/s) of the distillation teacher and the student, written to
metrics/throughput.json. A command, not a stage: timings vary from run to run, and the stages' metrics must
depend on the params only.

Each model classifies random uint8 images of the target's size in batches of `--batch-size` (64, as the
issue asks) under no_grad on `runtime.threads` threads; after `--warmup` batches, `--repeats` batches are
timed one by one and the median gives images/s. The student's time includes both heads and their fusion."""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline import io, paths, runtime
from pipeline.params import LIBRARIES, ParamsError
from pipeline.data import load_task
from pipeline.compression import students
from pipeline.compression.teachers import load_teacher
from pipeline.models import classifier
from pipeline.stages.common import load_params, setup_runtime, stage
from pipeline.tools.machine import machine


def images_per_second(fn, images: torch.Tensor, warmup: int, repeats: int) -> dict:
    with torch.no_grad():
        for _ in range(warmup):
            fn(images)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(images)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"images_per_s": round(len(images) / median, 1), "median_batch_ms": round(1000 * median, 2),
            "batch_ms": [round(1000 * t, 2) for t in times]}


@stage
def main(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--variants", nargs="*", default=[],
                        help="also students of these compare.token_variants / distill_variants, built untrained "
                             "(images/s does not depend on the weights): a recipe's speed before it is trained")
    args = parser.parse_args(argv)
    params = load_params(*LIBRARIES)
    known = {**params.compare.token_variants, **params.compare.distill_variants}
    unknown = [v for v in args.variants if v not in known]
    if unknown:
        raise ParamsError(f"--variants: {unknown[0]!r} is not in compare.token_variants or compare.distill_variants")
    device = setup_runtime(params.runtime.model_copy(update={"device": "cpu", "precision": "fp32"}), 0)  # a CPU benchmark
    task = load_task(paths.TARGET)
    images = torch.randint(0, 256, (args.batch_size, 3, *task.test_images.shape[2:]), dtype=torch.uint8)
    teacher = load_teacher(params, task, device)
    student, meta = classifier.load(paths.STUDENT)
    results = {
        "teacher": {"name": teacher.name, "parameters": teacher.parameters,
                    **images_per_second(teacher.logits, images, args.warmup, args.repeats)},
        "student": {"name": "distillation-token student (fused heads)" if meta["kind"] == "student" else meta["arch"],
                    "parameters": sum(p.numel() for p in student.parameters()),
                    **images_per_second(lambda b: classifier.logits_of(student, classifier.image_input(b)), images,
                                        args.warmup, args.repeats)},
    }
    for name in args.variants:  # seeded like the stage, though the weights do not enter the timing
        dp = params.with_overrides(known[name], source=f"--variants {name}").distill
        torch.manual_seed(dp.seed)
        model = students.build(dp, params.data.image_size, len(task.classes)).to(device).eval()
        fn = (lambda m: lambda b: classifier.logits_of(m, classifier.image_input(b)))(model)
        entry = {"overrides": known[name], "parameters": sum(p.numel() for p in model.parameters()),
                 **images_per_second(fn, images, args.warmup, args.repeats)}
        entry["speedup"] = round(entry["images_per_s"] / results["teacher"]["images_per_s"], 2)
        results.setdefault("variants", {})[name] = entry
    results["speedup"] = round(results["student"]["images_per_s"] / results["teacher"]["images_per_s"], 2)
    results["parameter_ratio"] = round(results["student"]["parameters"] / results["teacher"]["parameters"], 4)
    results["setup"] = {"batch_size": args.batch_size, "threads": params.runtime.threads, "repeats": args.repeats,
                        "torch": torch.__version__, "machine": machine()}
    io.write_json(paths.THROUGHPUT, results)
    t, s = results["teacher"], results["student"]
    print(f"teacher {t['images_per_s']:.0f} img/s ({t['parameters']:,} params) | student {s['images_per_s']:.0f} img/s "
          f"({s['parameters']:,} params) | speed-up {results['speedup']}x, {100 * results['parameter_ratio']:.1f}% of the parameters")
    for name, v in results.get("variants", {}).items():
        print(f"  {name} (untrained): {v['images_per_s']:.0f} img/s ({v['parameters']:,} params), {v['speedup']}x the teacher")


if __name__ == "__main__":
    main()
