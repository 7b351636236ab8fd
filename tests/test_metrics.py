"""Tests of pipeline.metrics (Transfer / Average / Last), pipeline.io (atomic, deterministic, pickle-free
files) and pipeline.optim (batches, schedule)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import io, metrics, optim

# Rows: E0 zero-shot, then the model after task 1, 2, 3. Columns: tasks 1, 2, 3 (percent).
A = [
    [10.0, 20.0, 30.0],  # E0
    [50.0, 25.0, 35.0],  # after task 1
    [45.0, 60.0, 40.0],  # after task 2
    [40.0, 55.0, 70.0],  # after task 3
]
# By hand (docs/methods/dual_teacher.md, "Evaluation protocol"):
#   Transfer = mean over i = 2..3 of mean over j = 1..i-1 of A[j, i]
#            = mean( A[1,2] , mean(A[1,3], A[2,3]) ) = mean( 25, mean(35, 40) ) = mean(25, 37.5) = 31.25
#            (row 0 must not count: with it, mean(mean(20, 25), mean(30, 35, 40)) = mean(22.5, 35) = 28.75)
#   Average  = mean over i of mean over j = 1..3 of A[j, i]
#            = mean( (50+45+40)/3, (25+60+55)/3, (35+40+70)/3 ) = mean(45, 46.667, 48.333) = 140/3 = 46.6667
#            (with row 0 it would be 480/12 = 40)
#   Last     = mean(A[3, :]) = (40 + 55 + 70) / 3 = 55
#   zero_shot_transfer(row 0) = mean of E0 on tasks 2..3 = (20 + 30) / 2 = 25
TRANSFER, AVERAGE, LAST, ZERO_SHOT_TRANSFER = 31.25, 140 / 3, 55.0, 25.0


def test_transfer_average_last_by_hand():
    assert metrics.transfer(A) == pytest.approx(TRANSFER)
    assert metrics.average(A) == pytest.approx(AVERAGE)
    assert metrics.last(A) == pytest.approx(LAST)
    assert metrics.zero_shot_transfer(A[0]) == pytest.approx(ZERO_SHOT_TRANSFER)


def test_summary_rounds_and_names():
    assert metrics.summary(np.array(A)) == {"transfer": 31.25, "average": 46.6667, "last": 55.0}
    assert metrics.summary(A, digits=1) == {"transfer": 31.2, "average": 46.7, "last": 55.0}


def test_transfer_ignores_learned_and_diagonal_entries():
    # Entries on and below the diagonal (tasks already learned) and row 0 must not move Transfer.
    b = np.array(A)
    b[0, :] = 99.0
    b[1, 0] = b[2, 0] = b[2, 1] = b[3, :] = 0.0
    assert metrics.transfer(b) == pytest.approx(TRANSFER)


def test_single_task():
    one = [[30.0], [80.0]]
    assert math.isnan(metrics.transfer(one))
    assert math.isnan(metrics.zero_shot_transfer([30.0]))
    assert metrics.average(one) == metrics.last(one) == 80.0


@pytest.mark.parametrize(
    "shape", [(3, 3), (3, 4), (5, 3), (4,), (2, 3, 4)], ids=lambda s: "x".join(map(str, s))
)
@pytest.mark.parametrize("fn", [metrics.transfer, metrics.average, metrics.last, metrics.summary], ids=lambda f: f.__name__)
def test_wrong_shapes_rejected(fn, shape):
    with pytest.raises(ValueError, match=r"\(T \+ 1\) x T"):
        fn(np.zeros(shape))


# --- io -----------------------------------------------------------------------------------------------------


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_json_same_object_same_bytes(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json(a, {"z": 1, "a": [1.5, {"y": None, "b": "x"}]})
    io.write_json(b, {"a": [1.5, {"b": "x", "y": None}], "z": 1})  # same object, other insertion order
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes().endswith(b"}\n")
    assert io.read_json(a) == {"z": 1, "a": [1.5, {"y": None, "b": "x"}]}


def test_write_json_unserialisable_keeps_old_file(tmp_path):
    path = tmp_path / "m.json"
    io.write_json(path, {"old": True})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        io.write_json(path, {"new": object()})
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.json"]


def test_write_json_failure_mid_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.json"
    io.write_json(path, {"old": True})
    before = path.read_bytes()
    real = Path.write_text

    def half_then_crash(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2], *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(path, {"new": list(range(100))})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.json"]  # no temp file left behind


def test_write_json_creates_folders_and_leaves_no_temp(tmp_path):
    path = tmp_path / "deep" / "er" / "m.json"
    io.write_json(path, [1, 2])
    io.write_json(path, [3])
    assert io.read_json(path) == [3]
    assert _listing(path.parent) == ["m.json"]


def test_read_json_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.json"
    with pytest.raises(FileNotFoundError, match="broken.json"):
        io.read_json(path)
    path.write_text('{"a": ')
    with pytest.raises(ValueError, match="broken.json"):
        io.read_json(path)


def test_tensors_round_trip_without_pickle(tmp_path):
    path = tmp_path / "t.safetensors"
    tensors = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "i": torch.tensor([1, 2], dtype=torch.int64)}
    io.save_tensors(path, tensors, metadata={"note": "x"})
    loaded = io.load_tensors(path)
    assert set(loaded) == {"w", "i"}
    assert torch.equal(loaded["w"], tensors["w"]) and loaded["i"].dtype == torch.int64
    header_len = int.from_bytes(path.read_bytes()[:8], "little")  # safetensors: u64 header length, JSON header
    assert path.read_bytes()[8:9] == b"{" and header_len < path.stat().st_size
    assert _listing(tmp_path) == ["t.safetensors"]


@pytest.mark.parametrize("content", [b"not a safetensors file at all", b""], ids=["garbage", "empty"])
def test_load_tensors_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        io.load_tensors(path)
    assert str(path) in str(info.value)


def test_load_tensors_truncated_file(tmp_path):
    path = tmp_path / "cut.safetensors"
    io.save_tensors(path, {"w": torch.ones(64, 64)})
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.safetensors"):
        io.load_tensors(path)


def test_load_tensors_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.safetensors"):
        io.load_tensors(tmp_path / "nothing.safetensors")


# --- optim --------------------------------------------------------------------------------------------------


def _draw(*args) -> list[list[int]]:
    return [b.tolist() for b in optim.batches(*args)]


def test_batches_deterministic_for_a_seed():
    assert _draw(20, 4, 11, 7) == _draw(20, 4, 11, 7)
    assert _draw(20, 4, 11, 7) != _draw(20, 4, 11, 8)


def test_batches_exact_step_count_and_size():
    for steps in (0, 1, 7, 25):
        drawn = _draw(10, 3, steps, 0)
        assert len(drawn) == steps
        assert all(len(b) == 3 for b in drawn)


def test_batches_cover_every_item_once_per_epoch():
    drawn = _draw(12, 4, 9, 1)  # 3 epochs of 3 batches
    epochs = [sum(drawn[e * 3 : e * 3 + 3], []) for e in range(3)]
    for items in epochs:
        assert sorted(items) == list(range(12))
    assert epochs[0] != epochs[1]  # a new permutation every epoch


def test_batches_drop_the_partial_batch_without_repeats():
    drawn = _draw(10, 4, 4, 3)  # 2 batches per epoch (8 of 10 items), 2 epochs
    for e in range(2):
        items = drawn[2 * e] + drawn[2 * e + 1]
        assert len(set(items)) == 8 and set(items) <= set(range(10))


def test_batches_smaller_set_than_a_batch():
    drawn = _draw(5, 8, 3, 0)
    assert len(drawn) == 3
    assert all(sorted(b) == list(range(5)) for b in drawn)


def _lrs(warmup: int, total: int, steps: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=2.0)
    sched = optim.warmup_cosine(opt, warmup, total)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_by_hand():
    lrs = _lrs(warmup=4, total=12, steps=15)
    # Warm-up: (step + 1) / 4 of the base rate 2.0; then 0.5 (1 + cos(pi (step - 4) / 8)), 0 from step 12 on.
    expected = [0.5, 1.0, 1.5, 2.0] + [1.0 + math.cos(math.pi * (s - 4) / 8) for s in range(4, 12)] + [0.0] * 3
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[6] == pytest.approx(2.0 * 0.5 * (1 + math.sqrt(0.5)))  # a quarter into the decay
    assert lrs[8] == pytest.approx(1.0)  # half-way
    assert max(lrs) == pytest.approx(2.0)
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_warmup_cosine_without_warmup_starts_at_base():
    lrs = _lrs(warmup=0, total=4, steps=5)
    assert lrs == pytest.approx([2.0, 1.0 + math.cos(math.pi / 4), 1.0, 1.0 + math.cos(3 * math.pi / 4), 0.0])
