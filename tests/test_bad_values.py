"""Issue 36: nothing lost on a bad value, no run that diverges and exits 0. Every test here reproduced its
failure before the fix: an infinite learning rate, a non-finite loss, a duplicate key, a YAML syntax error,
a file for data.root, PIPELINE_DEBUG's exit code, NaN in metrics JSON, output modes."""
from __future__ import annotations

import copy
import json
import math
import os
import types
import typing

import pytest
import torch
import yaml

from conftest import rejected_params
from pipeline.params import Params, ParamsError
from pipeline.errors import InputError


def _with(params: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(params)
    *parents, last = dotted.split(".")
    node = out
    for key in parents:
        node = node[key]
    node[last] = value
    return out


def _float_keys(model: type, prefix: str = "") -> list[str]:
    """Every dotted key of the params schema whose value is a float (or float | None), found by walking the
    pydantic models: a float field added later is tested without editing this file."""
    from pydantic import BaseModel

    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union else (annotation,)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _float_keys(annotation, f"{prefix}{name}.")
        elif float in args:
            keys.append(f"{prefix}{name}")
    return keys


FLOAT_KEYS = _float_keys(Params)


def test_the_schema_walk_finds_the_rates_weights_and_temperatures():
    assert {"train.lr", "pretrain.lr", "loss.tau", "loss.dis_weight", "loss.kd_temperature", "distill.lr",
            "distill.kd.tau", "distill.token.l2l_inner_lr", "cohort.lr", "cohort.mcl.temperature",
            "cohort.lmcl.meta_lr", "teacher.lr", "distill.feature.weight"} <= set(FLOAT_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_every_float_param_must_be_finite(micro_params, key, value):
    """(1) `train.lr: .inf` passed `gt=0` and trained to NaN weights with exit 0."""
    message = rejected_params(_with(micro_params, key, value))
    assert key in message and "finite" in message


def test_inf_from_params_yaml_is_named(micro_params, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_with(micro_params, "train.lr", math.inf)))
    assert "lr: .inf" in path.read_text()
    with pytest.raises(ParamsError, match=r"train\.lr: .*finite"):
        Params.load(path, libraries=())


# --- a non-finite loss stops the run -------------------------------------------------------------------------


def test_run_steps_stops_at_a_non_finite_term():
    from pipeline.errors import Diverged
    from pipeline.training import run_steps

    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    calls = []

    def step(i, _):
        calls.append(i)
        optimizer.step()
        return {"ce": 1.0, "dis": math.nan if i == 2 else 0.5, "total": math.nan if i == 2 else 1.5}

    with pytest.raises(Diverged) as info:
        run_steps(range(5), 5, step, schedule, desc="train shape (finetune)", progress=False)
    assert calls == [0, 1, 2]  # no step after the bad one
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, InputError)
    assert "train shape (finetune)" in message and "step 2" in message and "'dis'" in message and "nan" in message


def test_pretraining_stops_at_a_non_finite_loss(monkeypatch):
    """E0's own loop (not run_steps): a NaN contrastive loss raises at the step it appears."""
    from pipeline import pretraining
    from pipeline.errors import Diverged

    calls = []

    def nan_loss(image, text, scale):
        calls.append(1)
        return (image.sum() + text.sum()) * math.nan

    monkeypatch.setattr(pretraining, "clip_contrastive", nan_loss)
    from pipeline.params import PretrainParams
    from pipeline.data import CaptionCorpus
    from pipeline.models import clip as clip_lib

    clip = clip_lib.build("synth-rn-tiny", 32)
    corpus = CaptionCorpus(images=torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), captions=[f"a photo of {i}" for i in range(8)])
    with pytest.raises(Diverged, match=r"pretrain E0: loss term 'contrastive' is nan at step 0"):
        pretraining.pretrain(clip, corpus, PretrainParams(steps=3, batch_size=4, warmup_steps=1), torch.device("cpu"))
    assert calls == [1]


# --- one line and exit 2 -------------------------------------------------------------------------------------


def test_duplicate_key_in_params_yaml_is_named(micro_params, tmp_path):
    """(4) DVC calls such a params.yaml corrupted after pipeline.tools.check passed it (PyYAML keeps the last value)."""
    path = tmp_path / "params.yaml"
    text = yaml.safe_dump(micro_params, sort_keys=False).replace("train:\n", "train:\n  lr: 0.5\n", 1)
    path.write_text(text)
    with pytest.raises(ParamsError) as info:
        Params.load(path, libraries=())
    message = str(info.value)
    assert "\n" not in message and "duplicate key" in message and "'lr'" in message and "line" in message


def test_yaml_syntax_error_is_one_line(tmp_path):
    """(7) the scanner's error spanned 8 lines."""
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [0.1\n  steps: 3\n")
    with pytest.raises(ParamsError) as info:
        Params.load(path, libraries=())
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: not valid YAML") and "line " in message


def test_data_root_that_is_a_file_says_so(micro_params, tmp_path):
    """(7) it said the folder does not exist."""
    afile = tmp_path / "images.txt"
    afile.write_text("not a folder")
    message = rejected_params(_with(micro_params, "data.root", str(afile)))
    assert f"{str(afile)!r} is a file, not a folder" in message


@pytest.mark.parametrize("section, steps", [("train", 3), ("pretrain", 4)])
def test_warmup_longer_than_the_run_is_refused(micro_params, section, steps):
    """(7) a warm-up that never ends was accepted silently: the run never reaches its learning rate."""
    raw = _with(_with(micro_params, f"{section}.steps", steps), f"{section}.warmup_steps", steps + 1)
    message = rejected_params(raw)
    assert f"{section}.warmup_steps: {steps + 1} is more than {section}.steps {steps}" in message
    Params.from_dict(_with(raw, f"{section}.warmup_steps", steps), libraries=())  # equal: allowed


def test_input_error_under_pipeline_debug_shows_its_traceback_and_still_exits_2(monkeypatch, capsys):
    """(7) PIPELINE_DEBUG=1 turned exit 2 into 1."""
    from pipeline.stages.common import stage

    @stage
    def main(argv):
        raise InputError("train.lr: bad")

    monkeypatch.setenv("PIPELINE_DEBUG", "1")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    with pytest.raises(SystemExit) as info:
        main([])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Traceback" in err and err.splitlines()[-1] == "error: train.lr: bad"


# --- strict JSON and modes ------------------------------------------------------------------------------------


def test_metrics_json_writes_null_for_an_undefined_value(tmp_path):
    """(6) a one-task chain wrote `"transfer": NaN`, which is not JSON."""
    from pipeline import io, metrics

    io.write_json(tmp_path / "m.json", {"transfer": metrics.zero_shot_transfer([50.0]), "rows": [[1.0, math.inf]]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}")) == \
        {"transfer": None, "rows": [[1.0, None]]}


def test_a_checkpoint_follows_the_umask(tmp_path):
    """(3) safetensors' own temp file and rename left checkpoints 0600."""
    from pipeline import io

    old = os.umask(0o022)
    try:
        io.save_tensors(tmp_path / "a.safetensors", {"w": torch.ones(2)})
        os.umask(0o002)
        io.save_tensors(tmp_path / "b.safetensors", {"w": torch.ones(2)})
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.safetensors").stat().st_mode & 0o777 == 0o664


def test_predict_names_a_model_that_was_never_trained(micro_params, tmp_path, monkeypatch, capsys):
    """(7) `--model student` with no student trained asked for `--task` instead."""
    from pipeline.tools import predict

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(micro_params))
    (tmp_path / "images").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    monkeypatch.delenv("DVC_STAGE", raising=False)
    with pytest.raises(SystemExit) as info:
        predict.main(["--model", "student", "img.png"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1
    assert "--model: no model 'student' in models/" in err and "make compress" in err and "--task" not in err


def test_check_reads_the_pretrained_file_against_the_architecture(micro_params, tmp_path, monkeypatch):
    """(4) pipeline.tools.check passed a text file named .safetensors and another architecture's weights; the
    pretrain stage refused them after DVC had removed its outputs."""
    from safetensors.torch import save_file

    from pipeline.models import clip as clip_lib
    from pipeline.validation import check_all

    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "text.safetensors").write_text("not weights at all\n")
    torch.save(clip_lib.build("synth-vit-tiny", 32).model.state_dict(), tmp_path / "other.pt")
    save_file({k: v.contiguous() for k, v in clip_lib.build("synth-rn-tiny", 32).model.state_dict().items()},
              str(tmp_path / "good.safetensors"))
    for name, message in (("text.safetensors", "not a safetensors file"), ("other.pt", "do not fit 'synth-rn-tiny'")):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(micro_params, "model.pretrained", name)))
        with pytest.raises(InputError, match=message) as info:
            check_all(Params.load(tmp_path / "params.yaml"))
        assert "\n" not in str(info.value) and f"model.pretrained: could not load {name!r}" in str(info.value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(micro_params, "model.pretrained", "good.safetensors")))
    assert check_all(Params.load(tmp_path / "params.yaml")).startswith("params.yaml: ok")


def test_check_refuses_cuda_without_a_gpu(micro_params, tmp_path, monkeypatch):
    """(4) `runtime.device: cuda` without CUDA passed the check and failed in the first stage that ran."""
    from pipeline.validation import check_all

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_with(micro_params, "runtime.device", "cuda")))
    with pytest.raises(InputError, match="runtime.device: 'cuda' requested but no CUDA device"):
        check_all(Params.load(tmp_path / "params.yaml"))


def test_check_follows_every_path_of_the_caption_list(micro_params, tmp_path, monkeypatch):
    """(4) a captions.tsv line naming a missing image passed the check; prepare refused it."""
    from PIL import Image

    from pipeline.validation import check_all

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "images"
    for task in ("fruit",):
        for split, n in (("train", 2), ("test", 1)):
            for cls in ("apple", "pear"):
                folder = root / task / split / cls
                folder.mkdir(parents=True)
                for i in range(n):
                    Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    (root / "pretrain" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "pretrain" / "a" / "0.png")
    (root / "pretrain" / "captions.tsv").write_text("a/0.png\ta photo\na/1.png\tanother photo\n")
    raw = _with(_with(micro_params, "data.benchmark", "folder"), "tasks", {"fruit": {"prev": "e0"}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError, match=r"captions.tsv: lists 'a/1.png', which is no file under"):
        check_all(Params.load(tmp_path / "params.yaml"))
    Image.new("RGB", (8, 8)).save(root / "pretrain" / "a" / "1.png")
    assert "8 images under" in check_all(Params.load(tmp_path / "params.yaml"))  # the task's 6 and the 2 listed


def test_a_huge_image_is_one_line(tmp_path, monkeypatch, capsys, recwarn):
    """(7) a 12000 x 12000 image printed PIL's decompression-bomb warning twice (check, then prepare), two lines
    each. PIL's limit is lowered here, so a 12 x 12 image stands for it."""
    from PIL import Image

    from pipeline.data.images import load_image
    from pipeline.validation import verify_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # warns over 100 pixels, refuses over 200
    path = tmp_path / "huge.png"
    Image.new("RGB", (12, 12)).save(path)
    verify_image(path)  # pipeline.tools.check: says nothing; the stage decoding it says it once
    assert load_image(path, 8).shape == (3, 8, 8)
    assert capsys.readouterr().err == f"warning: {path}: 144 pixels decoded (over PIL's decompression-bomb limit of 100 pixels)\n"
    assert [str(w.message) for w in recwarn] == []
