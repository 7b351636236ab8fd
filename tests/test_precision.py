"""runtime.precision, TF32 and the device choice (pipeline/runtime.py): fp32, the default, enters no autocast
context at all, so a CPU run is the run it was before the key existed; bf16 is refused where the device is
the CPU; `auto` picks CUDA when torch finds it, and the CUDA flags are set for CUDA alone. No GPU needed:
CUDA's presence is monkeypatched."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch
import yaml
from conftest import REPO, rejected_params

from pipeline import runtime
from pipeline.data import loader
from pipeline.stages.common import setup_runtime
from pipeline.continual.inputs import TaskInputs
from pipeline.tools.bench_synthetic import SyntheticOutputs, synthetic_corpus, synthetic_inputs, synthetic_task
from pipeline.params import Params, RuntimeParams
from pipeline.continual import get_method
from pipeline.continual.trainer import train_task
from pipeline.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def raw_params(**runtime_keys) -> dict:
    """The committed params.yaml, a two-task chain of tiny steps, and `runtime` as given (the committed keys
    without `precision`, plus `runtime_keys`)."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["root"] = str(REPO / "images")  # must exist; read by the folder benchmark only
    raw["tasks"] = {"shapes": {"prev": "e0"}, "digits": {"prev": "shapes"}}
    raw["train"].update(steps=2, batch_size=4, warmup_steps=2)
    raw["pretrain"].update(steps=2, batch_size=8, warmup_steps=2)
    raw["loss"]["zscl_ref_batch"] = 4
    raw["runtime"] = {"device": "cpu", "threads": 1, **runtime_keys}
    return raw


@pytest.fixture
def no_autocast(monkeypatch):
    """Any autocast context entered anywhere (ours, torch's or a library's) fails the test."""

    def refuse(self):
        raise AssertionError("an autocast context was entered")

    monkeypatch.setattr(torch.amp.autocast_mode.autocast, "__enter__", refuse)


# ------------------------------------------------------------------------------------------- the param
def test_precision_is_fp32_when_absent_and_in_the_committed_params():
    assert Params.from_dict(raw_params(), libraries=()).runtime.precision == "fp32"
    assert yaml.safe_load((REPO / "params.yaml").read_text())["runtime"]["precision"] == "fp32"


def test_an_unknown_precision_is_named():
    message = rejected_params(raw_params(precision="fp16"))
    assert "runtime.precision" in message and "fp32" in message and "bf16" in message


def test_bf16_with_device_cpu_is_refused_at_load():
    message = rejected_params(raw_params(precision="bf16"))
    assert "runtime.precision: bf16 needs a CUDA device" in message and "'cpu'" in message


def test_bf16_with_device_auto_is_refused_where_auto_finds_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    params = Params.from_dict(raw_params(device="auto", precision="bf16"), libraries=())  # valid on a GPU box
    with pytest.raises(InputError, match=r"^runtime\.precision: bf16 needs a CUDA device, and runtime\.device 'auto'") as info:
        setup_runtime(params.runtime, 0)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------- the autocast context
def test_fp32_is_no_context_at_all_and_bf16_is_cuda_autocast():
    assert isinstance(runtime.autocast(CPU, "fp32"), contextlib.nullcontext)
    with pytest.raises(InputError, match=r"^runtime\.precision: bf16 needs a CUDA device, not cpu"):
        runtime.autocast(CPU, "bf16")
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else contextlib.nullcontext():
        ctx = runtime.autocast(torch.device("cuda"), "bf16")  # torch warns (and disables it) without CUDA
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda" and ctx.fast_dtype == torch.bfloat16


def test_to_device_is_the_tensor_itself_on_the_cpu():
    x = torch.arange(4)
    assert runtime.to_device(x, CPU) is x


# ------------------------------------------------------------------------------ device choice, CUDA flags
@pytest.fixture
def cuda_flags(monkeypatch):
    """The CUDA flags setup may set, off (cuDNN autotuning on, to see it switched off), and put back afterwards
    (by hand: monkeypatch cannot restore torch's flag objects); deterministic mode recorded, not set."""
    saved, threads = flags(), torch.get_num_threads()
    set_flags(False, False, True)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    yield calls
    set_flags(*saved)
    torch.set_num_threads(threads)  # setup sets runtime.threads


def set_flags(matmul_tf32: bool, cudnn_tf32: bool, benchmark: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cudnn.benchmark = benchmark


def flags() -> tuple[bool, bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_cuda_present_gets_cuda_tf32_and_deterministic_mode(cuda_flags, monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.setup(0, device=device, threads=1) == torch.device("cuda")
    assert flags() == (True, True, False)  # TF32 matmuls and convolutions; cuDNN autotuning off
    assert cuda_flags == [((True,), {"warn_only": True})]


@pytest.mark.parametrize("device, available", [("auto", False), ("cpu", True), ("cpu", False)])
def test_the_cpu_touches_no_cuda_flag(cuda_flags, monkeypatch, device, available):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    assert runtime.setup(0, device=device, threads=1) == CPU
    assert flags() == (False, False, True) and cuda_flags == []  # exactly as the fixture left them


def test_bf16_with_cuda_present_is_accepted(cuda_flags, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    params = Params.from_dict(raw_params(device="auto", precision="bf16"), libraries=())
    assert runtime.setup(0, **params.runtime.model_dump(include={"device", "threads", "precision"})) == torch.device("cuda")


@pytest.mark.parametrize("available", [True, False])
def test_a_stage_sets_the_loaders_from_its_runtime_section(cuda_flags, monkeypatch, available):
    """The runtime takes plain values; the stage's setup_runtime also sets the image loaders' workers, and pins
    their batches where the device is CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(loader, "_settings", dict(loader._settings))  # the process-wide settings put back after
    device = setup_runtime(RuntimeParams(device="auto", threads=1, workers=3), 0)
    assert device.type == ("cuda" if available else "cpu")
    assert loader.workers() == 3 and loader._settings["pin_memory"] is available


# ----------------------------------------------------------- fp32 training: no autocast, the same weights
def synthetic_context(params: Params, method: str) -> TaskInputs:
    """Task `digits` after `shapes`, synthetic, on a random synth-rn-tiny (pipeline/tools/bench_synthetic.py)."""
    from pipeline.models import clip as clip_lib
    from pipeline.stages.prototypes import e0_outputs

    generator = torch.Generator().manual_seed(0)
    tasks = {n: synthetic_task(n, 3, 8, 32, ["a {}."], generator) for n in params.task_names}
    torch.manual_seed(0)
    model = clip_lib.build("synth-rn-tiny", 32)
    e0 = clip_lib.freeze(copy.deepcopy(model))
    outputs = {n: e0_outputs(e0, t, 8, params.runtime.precision) for n, t in tasks.items()}
    return synthetic_inputs(params, method, "digits", tasks, copy.deepcopy(model), CPU,
                            SyntheticOutputs(model, outputs, synthetic_corpus(8, 32, generator)))


@pytest.mark.parametrize("method", ["dual_teacher", "zscl"])
def test_an_fp32_task_enters_no_autocast_and_trains_as_without_the_key(no_autocast, method):
    weights = []
    for keys in ({}, {"precision": "fp32"}):
        params = Params.from_dict(raw_params(**keys), libraries=())
        ctx = synthetic_context(params, method)
        train_task(get_method(method)(ctx))
        weights.append(ctx.student.model.state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_fp32_pretraining_and_compression_enter_no_autocast(no_autocast):
    from pipeline.compression.run import student_method
    from pipeline.compression.trainer import fit
    from pipeline.models import clip as clip_lib
    from pipeline.pretraining import pretrain

    params = Params.from_dict(raw_params(), libraries=())
    corpus = synthetic_corpus(16, 32, torch.Generator().manual_seed(0))
    trained = []
    for precision in ({}, {"precision": "fp32"}):
        torch.manual_seed(0)
        clip = clip_lib.build("synth-rn-tiny", 32)
        pretrain(clip, corpus, params.pretrain, CPU, **precision)
        trained.append(clip.model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    raw = raw_params()
    raw["distill"].update(epochs=1, batch_size=8)
    raw["distill"]["token"]["student"].update(d_model=16, n_layers=1, n_heads=2, d_ff=32)
    raw["distill"]["token"].update(l2l_every=1, l2l_unseen_classes=2)  # a learning-to-learn step, autocast too
    params = Params.from_dict(raw, libraries=())
    task = synthetic_task("target", 4, 16, 32, ["a {}."], torch.Generator().manual_seed(1))
    method = student_method(params, task, None, CPU)
    assert method.ctx.precision == "fp32"
    assert set(fit(method)) >= {"step_seconds"}


def test_bf16_on_the_cpu_is_refused_by_the_loops_too():
    """Params refuse bf16 with device cpu at load; a context built by hand (or `auto` resolved to the CPU past
    setup) is refused at its first forward pass, not run in fp32."""
    from pipeline.compression.base import DistillContext

    ctx = DistillContext(torch.nn.Linear(2, 2), synthetic_task("t", 2, 2, 16, ["{}"], torch.Generator()), None, CPU,
                         generator=torch.Generator(), precision="bf16")
    with pytest.raises(InputError, match="runtime.precision: bf16 needs a CUDA device"):
        ctx.autocast()
