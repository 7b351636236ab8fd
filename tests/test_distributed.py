"""Several processes through torchrun (`runtime.nproc`, pipeline/distributed.py), on the CPU with gloo.

- the mathematics, in two processes spawned here: per-rank means plus the mean of the gradients, and the
  gathered batch of the dual teacher, give the one-process gradient and prototype update;
- the train stage, run with `runtime.nproc: 2` (it re-executes itself under torchrun) against one process
  on the same global batch: the same model, prototypes, accuracy row and logged losses within the
  tolerances below, and rank 0 alone writes anything in the project.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_project, pipeline_params, rejected_params, run_captured
from pipeline import distributed
from pipeline.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")


# --- shard, the params check, the launch command ---------------------------------------------------------


def test_shard_gives_each_rank_an_equal_contiguous_slice():
    batch = torch.tensor([7, 3, 9, 1, 4, 0])
    assert distributed.shard(batch, 0, 1) is batch  # one process: the batch itself, untouched
    slices = [distributed.shard(batch, r, 3) for r in range(3)]
    assert [s.tolist() for s in slices] == [[7, 3], [9, 1], [4, 0]]
    assert torch.equal(torch.cat(slices), batch)  # rank order is the batch's order
    with pytest.raises(InputError, match=r"train\.batch_size: a batch of 6 .* runtime\.nproc 4"):
        distributed.shard(batch, 0, 4)


def test_nproc_must_divide_the_batch(micro_params):
    micro_params["runtime"]["nproc"] = 3  # train.batch_size 8
    message = rejected_params(micro_params)
    assert "runtime.nproc: 3" in message and "train.batch_size 8" in message
    micro_params["runtime"]["nproc"] = 0
    assert "runtime.nproc" in rejected_params(micro_params)
    from pipeline.params import Params

    micro_params["runtime"]["nproc"] = 2
    assert Params.from_dict(micro_params, libraries=()).runtime.nproc == 2


def test_init_outside_torchrun_or_alone_does_nothing_and_a_wrong_world_is_named(monkeypatch):
    cpu = torch.device("cpu")
    assert distributed.init(cpu, 1) is cpu and distributed.world_size() == 1 and distributed.is_main()
    monkeypatch.setenv("WORLD_SIZE", "1")  # `torchrun --nproc_per_node 1`: no process group either
    assert distributed.init(cpu, 1) is cpu
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InputError, match=r"runtime\.nproc: 1, but torchrun started 2 processes"):
        distributed.init(cpu, 1)


def test_the_launch_is_torchrun_by_this_interpreter():
    assert distributed.torchrun_command(2, "pipeline.stages.train", ["shape"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "pipeline.stages.train", "shape"]


# --- the mathematics, in two spawned gloo processes --------------------------------------------------------

BATCH, DIM, CLASSES = 8, 5, 3


def _one_step(indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """One backward of a per-sample-mean term on this rank's rows plus the dual teacher's batch-global terms
    (L_con, L_dis) on the gathered batch, the mean of the gradients, and the prototype update of the
    gathered batch; the same code serves one process (`indices` the whole batch) and each of two."""
    from pipeline.continual.prototypes import update_prototypes
    from pipeline.losses import clip_ce, prototype_contrastive, similarity_distillation

    data = torch.Generator().manual_seed(0)
    x, prompts = torch.randn(BATCH, DIM, generator=data), torch.randn(CLASSES, DIM, generator=data)
    labels, teacher = torch.arange(BATCH) % CLASSES, torch.randn(BATCH + CLASSES, 4, generator=data)
    prototypes = torch.nn.functional.normalize(torch.randn(CLASSES, 4, generator=data), dim=-1)
    torch.manual_seed(0)
    image, text = torch.nn.Linear(DIM, 4), torch.nn.Linear(DIM, 4)
    v, u = image(x[indices]), text(prompts)  # u: computed alike on every rank (the class texts)
    local = clip_ce(v, u, labels[indices], 2.0)  # a per-sample mean on this rank's rows
    v_all, labels_all = distributed.gather_rows(v), distributed.gather(labels[indices])
    indices_all = distributed.gather(indices)
    rows = torch.cat([v_all, u])
    batch_global = prototype_contrastive(v_all, labels_all, u, prototypes, 1.0) + similarity_distillation(
        rows, torch.cat([teacher[indices_all], teacher[BATCH:]]), prototypes)
    (local + batch_global).backward()
    params = [*image.parameters(), *text.parameters()]
    distributed.average_gradients(params)
    grads = {f"grad{i}": p.grad for i, p in enumerate(params)}
    return grads | {"prototypes": update_prototypes(prototypes, v_all, labels_all, 0.9), "indices": indices_all}


def _worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank))  # as torchrun sets them
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.save(_one_step(distributed.shard(torch.arange(BATCH))), f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_one_process_gradient_and_prototypes(tmp_path):
    """Measured: gradients within 2.4e-7 of one process's (entries up to 4: the mean of two rank gradients
    rounds otherwise than one gradient of the batch), prototypes equal (the same gathered rows, in the same
    order, as one process's). Asserted: rtol 1e-5, atol 1e-6."""
    assert not distributed.launched()
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path),), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = _one_step(torch.arange(BATCH))
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), f"{key}: the ranks differ"  # one all-reduce, same bytes
        torch.testing.assert_close(ranks[0][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert torch.equal(ranks[0]["indices"], torch.arange(BATCH))  # gathered in the batch's order


# --- the train stage with runtime.nproc 2 against one process ----------------------------------------------

# Python's audit hook, loaded by every interpreter of the torchrun run (PYTHONPATH): one line per file or
# folder opened for writing, created, renamed (by its new name) or removed under the project, in a log per
# rank ("launcher": the stage's first process and torchrun, which it becomes). safetensors writes from Rust,
# unseen, but into io's staging paths, whose creation and rename are seen.
AUDIT = '''
import os, sys
_root = os.environ["AUDIT_ROOT"]
_log = open(os.path.join(os.environ["AUDIT_DIR"], "writes." + os.environ.get("RANK", "launcher")), "a", buffering=1)
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not ((isinstance(mode, str) and set(mode) & set("wax+")) or (mode is None and flags & _WRITE)):
            return
    elif event == "os.rename":  # also os.replace: logged by its target
        path = args[1]
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        path = args[0]
    else:
        return
    if isinstance(path, (str, bytes, os.PathLike)):
        path = os.path.abspath(os.fsdecode(path))
        if path.startswith(_root + os.sep):
            _log.write(event + " " + os.path.relpath(path, _root) + "\\n")

sys.addaudithook(_hook)
'''


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A project copy (micro params, one thread) with data, E0 and the prototypes: what train@* reads."""
    base = tmp_path_factory.mktemp("ddp")
    project = make_project(base / "project", pipeline_params(), base / "scratch")
    for stage in ("prepare", "pretrain", "prototypes"):
        run_captured(project.root, f"pipeline.stages.{stage}")
    return project


def _outputs(project, task: str) -> dict:
    """What train@<task> left: weights, method state, model.json, the accuracy row, and the model's features
    of the task's test images and class texts (what the weights compute, unlike the attention's key bias:
    softmax ignores it, so its gradient is rounding noise, which AdamW scales up to steps of ~lr)."""
    from pipeline.data.benchmarks import load_tasks
    from pipeline.models import clip as clip_lib

    model, root = project.root / "models" / task, project.root
    state = model / "method_state.safetensors"
    with contextlib.chdir(root), torch.no_grad():
        clip, data = clip_lib.freeze(clip_lib.load(model)), load_tasks([task])[task]
        features = {"image": clip_lib.encode_images(clip, data.test_images),
                    "text": clip_lib.class_text_features(clip, data.prompts())}
    return {"weights": load_file(model / "model.safetensors"), "state": load_file(state) if state.is_file() else {},
            "meta": json.loads((model / "model.json").read_text()), "features": features,
            "row": json.loads((root / "metrics" / "tasks" / f"{task}.json").read_text())}


def _train(project, task: str, method: str, nproc: int, audit: Path | None = None) -> str:
    """train@<task> by `method`: in this process with nproc 1; else as DVC runs it, a process of its own
    (which becomes torchrun), with the write audit in `audit`. Returns what it printed."""
    params = pipeline_params()
    params["train"]["method"] = method
    params["runtime"]["nproc"] = nproc
    project.write_params(params)
    if nproc == 1:
        return run_captured(project.root, "pipeline.stages.train", task)
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT)
    env = dict(project.env, PYTHONPATH=str(audit), AUDIT_DIR=str(audit), AUDIT_ROOT=str(project.root.resolve()))
    proc = subprocess.run(["python", "-m", "pipeline.stages.train", task], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _compare(one: dict, two: dict, features: float, losses: float, state: float, weights: float) -> None:
    """Two processes against one: the accuracy row equal; features, logged losses (relative), method state
    and every weight within the given absolute tolerances."""
    assert two["row"] == one["row"]  # the accuracy row: the same predictions on every test image
    assert two["meta"]["params"]["runtime"]["nproc"] == 2 and one["meta"]["params"]["runtime"]["nproc"] == 1
    for name, value in one["features"].items():
        torch.testing.assert_close(two["features"][name], value, rtol=0, atol=features, msg=f"{name} features")
    assert one["meta"]["final_loss"].keys() == two["meta"]["final_loss"].keys()
    for name, value in one["meta"]["final_loss"].items():
        assert two["meta"]["final_loss"][name] == pytest.approx(value, rel=losses), name
    for key, atol in (("state", state), ("weights", weights)):
        assert one[key].keys() == two[key].keys()
        for name, tensor in one[key].items():
            torch.testing.assert_close(two[key][name], tensor, rtol=0, atol=atol, msg=f"{key} {name}")


def _only_rank0_wrote(audit: Path, task: str, out: str) -> None:
    rank0 = (audit / "writes.0").read_text()
    assert not (audit / "writes.1").read_text(), "rank 1 wrote in the project"
    assert not (audit / "writes.launcher").read_text(), "torchrun or the launcher wrote in the project"
    # the model folder, the accuracy row, the cost file and the curves: each put in place once, by rank 0
    for target in (f"models/{task}", f"metrics/tasks/{task}.json", f"metrics/cost/{task}.json",
                   f"metrics/train/{task}"):
        assert rank0.count(f"os.rename {target}\n") == 1, (target, rank0)
    assert out.count(f"after {task}:") == 1  # rank 0 alone evaluates and prints


def test_finetune_on_two_processes_matches_one(chain, tmp_path):
    """train@shape by fine-tuning (L_ce, a per-sample mean, on each rank's half of the batch of 8), 3 steps
    at lr 1e-3. Measured against one process: features within 1.6e-7 (entries up to 0.3), the logged loss
    within 7e-8 relative, weights within 2.1e-6 but the attention's key bias (2.1e-5; see `_outputs`), the
    same accuracy row. Asserted: features 1e-6, losses 1e-6 relative, weights 1e-4 (a tenth of one step)."""
    _train(chain, "shape", "finetune", 1)
    one = _outputs(chain, "shape")
    out = _train(chain, "shape", "finetune", 2, audit=tmp_path / "audit")
    _compare(one, _outputs(chain, "shape"), features=1e-6, losses=1e-6, state=0, weights=1e-4)
    _only_rank0_wrote(tmp_path / "audit", "shape", out)


def test_dual_teacher_on_two_processes_matches_one(chain, tmp_path):
    """train@colour (the second task: both teachers, L_dis over the seen tasks, carried prototypes) by the
    dual teacher, whose L_ce, L_con, L_dis and prototype update use the gathered global batch; 3 steps.

    Measured against one process: features within 4e-4 (entries up to 0.36), logged losses within 2.2e-4
    relative, prototypes within 5.4e-6, weights within 6.8e-5, the same accuracy row. Looser than
    fine-tuning, and not from the processes: L_dis = ||S - S_k||_F has the gradient (S - S_k) / ||S - S_k||,
    of norm 1 however small S - S_k is, and at the first step the student's features differ from E0's
    cached ones by rounding alone (~1e-7, a batch of 8 or 4 against the prototypes stage's 64), so that
    step's L_dis gradient is a direction of rounding noise, in one process as in two (with
    loss.dis_weight 0, two processes are within 1.2e-7 of one in the features). Asserted: features 2e-3,
    losses 1e-3 relative, prototypes 5e-5, weights 3e-4 (a tenth of the 3 steps' largest move)."""
    _train(chain, "shape", "dual_teacher", 1)
    _train(chain, "colour", "dual_teacher", 1)
    one = _outputs(chain, "colour")
    out = _train(chain, "colour", "dual_teacher", 2, audit=tmp_path / "audit")
    two = _outputs(chain, "colour")
    assert set(two["state"]) == {"prototypes", "prototypes/shape"}
    _compare(one, two, features=2e-3, losses=1e-3, state=5e-5, weights=3e-4)
    _only_rank0_wrote(tmp_path / "audit", "colour", out)
