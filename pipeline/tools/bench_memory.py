"""`make bench-memory`: peak resident memory of the continual branch's stages on generated folder benchmarks
of 2,000 and 20,000 training images (issue 12: streaming data keeps a stage's memory flat in the image count):
metrics/bench_memory.json. A command, not a stage.

For each size it writes a folder benchmark under a scratch folder (one task, `--classes` class folders of
JPEG files `--source-size` px square, a test split a tenth of the training one, a small pretrain/ folder for
E0), then runs prepare, pretrain, prototypes and train@<task> there, each as its own process from
params.yaml with the sizes below, and reads each process's peak resident set size from the kernel
(os.wait4: the larger of the stage's own and that of any DataLoader worker it waited for). The pixels an
in-memory task would have held, N x 3 x S x S bytes, are reported beside for scale."""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from pipeline import io, paths
from pipeline.stages.common import stage
from pipeline.tools.machine import machine

TASK = "shapes"
STAGES = (("prepare", []), ("pretrain", []), ("prototypes", []), ("train", [TASK]))
OUT = paths.METRICS / "bench_memory.json"


def write_images(folder: Path, count: int, classes: int, size: int, rng: np.random.Generator) -> None:
    """`count` JPEG files over `classes` class folders: a class's colour over smooth noise (cheap to make,
    and JPEG-sized like photographs at this resolution)."""
    colours = rng.integers(0, 256, (classes, 3))
    for i in range(count):
        c = i % classes
        target = folder / f"class_{c:03d}"
        target.mkdir(parents=True, exist_ok=True)
        noise = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((size, size), Image.BILINEAR)
        pixels = (np.asarray(image, dtype=np.uint16) + colours[c]) // 2
        Image.fromarray(pixels.astype(np.uint8)).save(target / f"{i:06d}.jpg", quality=90)


def make_benchmark(root: Path, count: int, args) -> None:
    rng = np.random.default_rng(count)
    for split, n in (("train", count), ("test", max(args.classes, count // 10))):
        write_images(root / TASK / split, n, args.classes, args.source_size, rng)
    write_images(root / "pretrain", 5 * args.classes, args.classes, args.source_size, rng)


def project_params(repo: Path, root: Path, args) -> dict:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["data"].update(benchmark="folder", root=str(root), image_size=args.image_size)
    raw["model"].update(arch=args.arch, pretrained=None)
    raw["pretrain"].update(steps=args.pretrain_steps, batch_size=32, warmup_steps=0)
    raw["train"].update(method=args.method, steps=args.steps, batch_size=args.batch_size, warmup_steps=0)
    raw["runtime"].update(workers=args.workers)
    raw["tasks"] = {TASK: {"prev": "e0"}}
    return raw


def peak_rss_mb(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """(peak resident MiB, wall seconds) of one process; ru_maxrss from wait4 is in KiB on Linux."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return round(usage.ru_maxrss / 1024, 1), round(time.perf_counter() - start, 1)


def measure(count: int, scratch: Path, repo: Path, args) -> dict:
    root, project = scratch / f"images_{count}", scratch / f"project_{count}"
    make_benchmark(root, count, args)
    (project / "images").mkdir(parents=True)  # the default data.root, which Params checks at import
    (project / "params.yaml").write_text(yaml.safe_dump(project_params(repo, root, args), sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": str(args.threads)}
    out = {"train_images": count, "test_images": max(args.classes, count // 10),
           "pixels_in_memory_mb": round(count * 3 * args.image_size**2 / 2**20, 1)}
    for name, argv in STAGES:
        mb, seconds = peak_rss_mb([sys.executable, "-m", f"pipeline.stages.{name}", *argv], project, env)
        key = f"{name}@{argv[0]}" if argv else name
        out[key] = {"peak_rss_mb": mb, "seconds": seconds}
        print(f"{count} images: {key} peak {mb} MiB, {seconds} s")
    return out


@stage
def main(argv):
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.bench_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000], help="training images per run")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--source-size", type=int, default=128, help="px of the generated JPEG files")
    parser.add_argument("--image-size", type=int, default=96, help="data.image_size: px the model reads")
    parser.add_argument("--arch", default="synth-rn-tiny")
    parser.add_argument("--method", default="dual_teacher")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pretrain-steps", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="runtime.workers")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--scratch", type=Path, default=None, help="where to write the benchmarks (default: a temp folder, removed after)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]  # the repository: this file is pipeline/tools/bench_memory.py
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench_memory_"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        runs = {str(n): measure(n, scratch, repo, args) for n in tqdm(args.images, desc="benchmarks")}
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    small, large = str(min(args.images)), str(max(args.images))
    ratios = {key: round(runs[large][key]["peak_rss_mb"] / runs[small][key]["peak_rss_mb"], 3)
              for key in runs[small] if isinstance(runs[small][key], dict)}
    settings = {k: v for k, v in vars(args).items() if k not in ("scratch", "out")}
    io.write_json(args.out, {"runs": runs, f"peak_ratio_{large}_vs_{small}": ratios, "settings": settings,
                             "machine": {**machine(), "python": platform.python_version()}})
    print(f"peak RSS ratio {large} / {small} images: " + ", ".join(f"{k} {v}x" for k, v in ratios.items()) + f" -> {args.out}")


if __name__ == "__main__":
    main()
