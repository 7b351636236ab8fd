"""`model.pretrained`: a local weights file (safetensors, or a torch state dict read weights-only) or an
open_clip tag from the local cache (pipeline/models/weights.py), on the tiny `synth-rn-tiny` at 32 px.

No test here may reach the network: sockets are refused for the whole module, so a lookup that tried would
fail at once instead of waiting for a timeout."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from conftest import make_micro_params, run_in
from pipeline.errors import InputError
from pipeline.models import clip as clip_lib

ARCH, SIZE = "synth-rn-tiny", 32

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a pretrained lookup tried the network")

    for name in ("create_connection", "getaddrinfo"):
        monkeypatch.setattr(socket, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    """A state dict of ARCH unlike any fresh build: every float tensor drawn anew."""
    gen = torch.Generator().manual_seed(7)
    state = clip_lib.build(ARCH, SIZE).model.state_dict()
    return {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone() for k, v in state.items()}


def _assert_loaded(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == weights.keys()
    for key, value in weights.items():
        assert torch.equal(state[key], value), key


def _refused(pretrained: str, arch: str = ARCH) -> str:
    """The InputError message of building `arch` with `pretrained`, checked to be one line."""
    with pytest.raises(InputError) as info:
        clip_lib.build(arch, SIZE, pretrained=pretrained)
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.pretrained: "), message
    return message


# --- local files --------------------------------------------------------------------------------------------


def _save(path: Path, layout: str, weights: dict[str, torch.Tensor]) -> None:
    if layout == "safetensors":
        save_file(weights, str(path))
    elif layout == "flat":
        torch.save(weights, path)
    elif layout == "nested":  # open_clip's training script: {"epoch", "name", "state_dict", "optimizer"}
        torch.save({"epoch": 3, "name": "run", "state_dict": weights, "optimizer": {"state": {}}}, path)
    elif layout == "ddp":  # the same from a DDP run: every key prefixed with `module.`
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in weights.items()}}, path)


@pytest.mark.parametrize("name,layout", [("e0.safetensors", "safetensors"), ("e0.pt", "flat"), ("epoch_3.pt", "nested"),
                                         ("e0.pth", "ddp"), ("open_clip_pytorch_model.bin", "flat")])
def test_a_local_file_loads_in_either_form(tmp_path, weights, name, layout):
    _save(tmp_path / name, layout, weights)
    clip = clip_lib.build(ARCH, SIZE, pretrained=str(tmp_path / name))
    _assert_loaded(clip.model, weights)


class _RunsCode:
    """A pickle that runs a command when unpickled in full: what a weights-only read must never do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.mark.parametrize("force_unsafe", [False, True], ids=["default", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"])
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, monkeypatch, weights, force_unsafe):
    """Refused before open_clip sees it, whatever the environment asks of torch.load's default (open_clip
    retries some failed loads with that default)."""
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"state_dict": weights | {"visual.conv1.weight": _RunsCode(marker)}}, path)
    message = _refused(str(path))
    assert f"could not load {str(path)!r} for {ARCH!r}: not a plain weights file" in message
    assert "posix.system" in message  # the global it refused, named
    assert not marker.exists(), "the pickle's code ran"

    # The payload is live: a full unpickle runs it (so the assertion above means something).
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("payload,reason", [(b"", "not a plain weights file (torch.load with weights_only=True: "),
                                            (b"not a checkpoint", "not a plain weights file (torch.load with weights_only=True: "),
                                            ([1, 2], "not a plain weights file (holds list, not a state dict)")])
def test_a_file_that_is_no_state_dict_is_named(tmp_path, payload, reason):
    path = tmp_path / "weights.pt"
    path.write_bytes(payload) if isinstance(payload, bytes) else torch.save(payload, path)
    message = _refused(str(path))
    assert f"could not load {str(path)!r} for {ARCH!r}: {reason}" in message


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_of_another_architecture_are_refused(tmp_path, suffix):
    other = {k: v.contiguous() for k, v in clip_lib.build("synth-vit-tiny", SIZE).model.state_dict().items()}
    path = tmp_path / f"vit{suffix}"
    save_file(other, str(path)) if suffix == ".safetensors" else torch.save(other, path)
    message = _refused(str(path))
    assert f"could not load {str(path)!r} for {ARCH!r}: its weights do not fit {ARCH!r}" in message
    assert "missing " in message and "unexpected " in message  # in brief: counts and a first key of each


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    path = tmp_path / "e0.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    assert f"could not load {str(path)!r} for {ARCH!r} (" in _refused(str(path))


def test_neither_a_file_nor_a_tag_is_refused(tmp_path):
    assert _refused("openai") == f"model.pretrained: 'openai' is neither a file nor an open_clip tag of {ARCH!r}"
    missing = str(tmp_path / "e0.bin")
    assert _refused(missing) == f"model.pretrained: {missing!r} is neither a file nor an open_clip tag of {ARCH!r}"


# --- open_clip tags, from the local cache only -------------------------------------------------------------


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache. huggingface_hub reads HF_HUB_CACHE / HF_HOME once, at import: the
    module's value is what a run started with those set would hold."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_an_uncached_tag_is_refused_with_where_it_looked(hub_cache):
    """A real tag of a real architecture: refused from the cache alone, before any model is built."""
    message = _refused("openai", arch="RN50")
    assert message.startswith("model.pretrained: open_clip tag 'openai' of 'RN50' is not in the local cache")
    assert str(hub_cache) in message and "timm/resnet50_clip.openai" in message
    assert "machine with internet" in message and "local weights file" in message


@pytest.fixture
def fake_tag(monkeypatch) -> dict:
    """A tag of ARCH in open_clip's registry (none exists for our tiny architectures), with its own
    normalisation and an activation that differs from ARCH's."""
    import open_clip.pretrained as registry

    cfg = {"hf_hub": "local/synth-rn-tiny-test/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "quick_gelu": True}
    monkeypatch.setitem(registry._PRETRAINED, ARCH, {"test": cfg})
    return cfg


def _put_in_cache(cache: Path, repo: str, filename: str, weights: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub's download leaves: refs/main names the snapshot holding the file."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    path = folder / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    save_file(weights, str(path)) if filename.endswith(".safetensors") else torch.save(weights, path)
    return path


@pytest.mark.parametrize("filename", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_a_cached_tag_loads_from_the_cache_with_its_normalisation(hub_cache, fake_tag, weights, filename):
    _put_in_cache(hub_cache, "local/synth-rn-tiny-test", filename, weights)
    with pytest.warns(UserWarning, match=r"QuickGELU mismatch .* tag 'test'"):
        clip = clip_lib.build(ARCH, SIZE, pretrained="test")
    _assert_loaded(clip.model, weights)
    assert tuple(clip.model.visual.image_mean) == fake_tag["mean"] and tuple(clip.model.visual.image_std) == fake_tag["std"]
    assert clip.model.visual.preprocess_cfg["size"] == SIZE


def test_a_tags_normalisation_is_saved_and_loaded_with_its_weights(hub_cache, fake_tag, weights, tmp_path):
    _put_in_cache(hub_cache, "local/synth-rn-tiny-test", "open_clip_model.safetensors", weights)
    with pytest.warns(UserWarning):
        clip = clip_lib.build(ARCH, SIZE, pretrained="test")
    clip_lib.save(clip, tmp_path / "e0", {"name": "e0"})
    loaded = clip_lib.load(tmp_path / "e0")  # rebuilt from the architecture's name, then given the tag's
    assert tuple(loaded.model.visual.image_mean) == fake_tag["mean"] and tuple(loaded.model.visual.image_std) == fake_tag["std"]
    images = torch.randint(0, 256, (2, 3, SIZE, SIZE), dtype=torch.uint8)
    assert torch.equal(clip_lib.image_input(loaded, images), clip_lib.image_input(clip, images))


def test_a_tag_without_its_weights_in_the_cache_is_refused(hub_cache, fake_tag):
    message = _refused("test")
    assert f"open_clip tag 'test' of {ARCH!r} is not in the local cache" in message and str(hub_cache) in message


# --- the pretrain stage -------------------------------------------------------------------------------------


def test_the_pretrain_stage_takes_e0_from_a_local_file(tmp_path, monkeypatch, weights):
    """prepare -> pretrain with `model.pretrained` a local file: E0 is those weights, in the project's
    checkpoint format, and its zero-shot row is written; nothing is pretrained."""
    save_file(weights, str(tmp_path / "e0.safetensors"))
    params = make_micro_params()
    params["model"]["pretrained"] = "e0.safetensors"  # relative to the project, as in params.yaml
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "images").mkdir()  # the default data.root, checked when pipeline.params is first imported
    for stage in ("prepare", "pretrain", "zero_shot"):
        run_in(tmp_path, monkeypatch, f"pipeline.stages.{stage}")
    e0 = clip_lib.load(tmp_path / "models" / "e0")
    _assert_loaded(e0.model, weights)
    assert json.loads((tmp_path / "models" / "e0" / "model.json").read_text())["source"] == "e0.safetensors"
    assert set(json.loads((tmp_path / "metrics" / "zero_shot.json").read_text())["tasks"]) == set(params["tasks"])
    assert not (tmp_path / "metrics" / "pretrain").exists()


def test_pipeline_check_refuses_a_bad_pretrained_before_dvc_runs(micro_params, tmp_path, monkeypatch, capsys):
    """`make repro` runs `python -m pipeline.tools.check` first: a pickle that would run code (or a tag not in the
    cache) is named there, before DVC removes the pretrain stage's outputs."""
    from pipeline.tools import check
    from tests.test_config import _with, _yaml, run_main

    torch.save({"w": _RunsCode(tmp_path / "ran")}, tmp_path / "evil.pt")
    code, _, err = run_main(check.main, _yaml(_with(micro_params, "model.pretrained", "evil.pt")),
                            tmp_path, monkeypatch, capsys)
    assert code == 2 and "model.pretrained: could not load 'evil.pt'" in err and "not a plain weights file" in err
    assert not (tmp_path / "ran").exists()
