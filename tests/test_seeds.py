"""A seed of the continual comparison redraws the data, E0 and the batch order (compare.seed_keys): two seeds
give different task images and different E0 checkpoints; one seed gives the same ones twice."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from pipeline import checkpoint, io, paths
from pipeline.tools.compare import BRANCHES, overrides
from pipeline.params import Params
from pipeline.stages import prepare, pretrain


def _run(root: Path, micro_params: dict, seed: int) -> tuple[dict, dict]:
    """prepare and pretrain (the micro configuration) under the comparison's overrides for `seed`: the first
    task's training split and E0's weights."""
    base = Params.from_dict(micro_params)
    raw = base.with_overrides(overrides(base, next(iter(base.compare.variants)), seed, BRANCHES["cl"])).model_dump(mode="json")
    folder = root / f"s{seed}"
    (folder / "images").mkdir(parents=True)
    raw["data"]["root"] = "images"
    raw["data"].update(reference_images=2, reference_captions=2)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        Path("params.yaml").write_text(yaml.safe_dump(raw))
        prepare.main([])
        pretrain.main([])
        first = Params.load().task_names[0]
        return io.load_tensors(paths.task_dir(first) / "train.safetensors"), \
            io.load_tensors(paths.model_dir("e0") / checkpoint.WEIGHTS)


def test_two_seeds_redraw_the_task_images_and_e0(tmp_path, micro_params):
    micro_params["pretrain"].update(steps=2, warmup_steps=1)
    data0, e0_0 = _run(tmp_path, micro_params, 0)
    data1, e0_1 = _run(tmp_path, micro_params, 1)
    assert not torch.equal(data0["images"], data1["images"])
    assert e0_0.keys() == e0_1.keys()
    assert any(not torch.equal(e0_0[k], e0_1[k]) for k in e0_0)
    again, e0_again = _run(tmp_path / "again", micro_params, 0)  # deterministic on the CPU for a fixed seed
    assert torch.equal(again["images"], data0["images"])
    assert all(torch.equal(e0_again[k], e0_0[k]) for k in e0_0)
