"""`python -m pipeline.tools.bench_gpu` (`make bench-gpu`): its CPU smoke form writes every field of
metrics/bench_gpu.json from synthetic data alone, and without CUDA its GPU form is refused in one line that
says how to run the CPU form. No timing is asserted: the figures of a CPU run mean nothing."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from conftest import REPO

from pipeline.tools import bench_gpu

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--device", "cpu", "--precision", "fp32", "--arch", "synth-rn-tiny", "--image-size", "32", "--batch", "4",
        "--classes", "3", "--train-images", "8", "--steps", "2", "--warmup", "1", "--infer-batch", "4"]


def run(argv: list[str]) -> None:
    threads = torch.get_num_threads()
    try:
        bench_gpu.main(argv)
    finally:
        torch.set_num_threads(threads)  # runtime.setup sets runtime.threads


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder with nothing but params.yaml (one thread, a small ZSCL reference batch) and images/:
    no data/, no models/, so any read of a stage output would fail."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["runtime"]["threads"] = 1
    raw["loss"]["zscl_ref_batch"] = 4
    raw["data"]["root"] = str(REPO / "images")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    return tmp_path, raw


def test_the_cpu_form_writes_every_field(elsewhere, monkeypatch):
    root, raw = elsewhere
    out = root / "out" / "bench_gpu.json"
    run([*TINY, "--out", str(out)])
    result = json.loads(out.read_text())
    assert not (root / "data").exists() and not (root / "models").exists()
    setup = result["setup"]
    assert setup["device_type"] == "cpu" and setup["device"].startswith("cpu")
    assert setup["torch"] == torch.__version__ and setup["precision"] == "fp32" and setup["dtype"] == "torch.float32"
    assert (setup["arch"], setup["image_size"], setup["batch"], setup["steps"], setup["warmup"], setup["infer_batch"]) == \
        ("synth-rn-tiny", 32, 4, 2, 1, 4)
    assert setup["tf32"] is False and "peak_memory" in setup

    train = result["train"]
    assert train["setting"]["seen_tasks"] == 2 and train["setting"]["classes"] == 3
    assert set(train["methods"]) == set(bench_gpu.METHODS) == {"finetune", "dual_teacher", "zscl"}
    figures = {"images_per_s", "median_ms", "q1_ms", "q3_ms", "peak_mb"}
    for entry in train["methods"].values():
        assert set(entry) == figures and all(math.isfinite(v) and v > 0 for v in entry.values())
    assert result["dual_teacher_per_finetune"] == pytest.approx(
        train["methods"]["dual_teacher"]["images_per_s"] / train["methods"]["finetune"]["images_per_s"], rel=0.01)

    cnns = {sets["distill.student"] for sets in raw["compare"]["distill_variants"].values()}
    assert set(result["inference"]) == {"token"} | cnns  # e.g. tf_mobilenetv3_small_minimal_100, shufflenet_v2_x0_5
    for name, entry in result["inference"].items():
        assert figures <= set(entry) and entry["parameters"] > 0 and entry["images_per_s"] > 0
    assert result["inference"]["token"]["patch_size"] == 16


def test_without_cuda_the_gpu_form_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as info:
        run([])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs a GPU" in err and "--device cpu --precision fp32" in err


def test_bf16_on_the_cpu_is_refused_in_one_line(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        run(["--device", "cpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--precision bf16 needs a CUDA device" in err


def test_options_out_of_range_are_refused(monkeypatch, capsys):
    with pytest.raises(SystemExit) as info:
        run([*TINY, "--steps", "1"])
    assert info.value.code == 2 and "--steps must be >= 2" in capsys.readouterr().err
