"""Distillation sites on real networks (pipeline/models/sites.py) and CNNs by name (pipeline/models/cnn.py).

Every site is recomputed by hand from the block's own submodules, so a hook on the wrong module, or an input
site overwritten by timm's in-place activation, fails here. BatchNorm parameters and statistics are randomised
first: at initialisation timm zeroes a ResNet block's last BN scale (the residual branch would be 0) and every
BN is the identity in eval mode, which would hide a wrong site.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models import cnn, sites
from pipeline.models.sites import FeatureTap, Site

TEACHER, MOBILENET, SHUFFLENET = "resnet18", "mobilenetv2_050", "shufflenet_v2_x0_5"
SIZE = 32  # the project's image size; feature maps are 8x8 .. 1x1


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return model


def _net(arch: str, num_classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return _randomise_bn(cnn.build(arch, num_classes)).eval()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a busy 2-core machine two OpenMP threads waiting
    on each other made a 32-px forward take seconds instead of milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    return {a: _net(a) for a in (TEACHER, MOBILENET, SHUFFLENET)}


def _images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _site(model: nn.Module, name: str) -> Site:
    return next(s for s in sites.candidate_sites(model) if s.name == name)


def _tap(model: nn.Module, taps: list[Site], x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), FeatureTap(model, taps) as tap:
        model(x)
    return tap.features


def _bn(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode BatchNorm alone (no activation), from its parameters."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


# --- the three families: each site recomputed by hand ---------------------------------------------------------

@pytest.mark.parametrize("block_name", ["layer1.1", "layer2.0"])  # identity shortcut; downsample shortcut
def test_resnet_site_is_the_residual_sum_before_the_final_relu(nets, block_name):
    model = nets[TEACHER]
    site, b = _site(model, block_name), model.get_submodule(block_name)
    assert site == Site(block_name, f"{block_name}.act2", "input")
    f = _tap(model, [site, Site("in", block_name, "input"), Site("out", block_name, "output")], _images())
    x = f["in"]
    with torch.no_grad():
        shortcut = b.downsample(x) if b.downsample is not None else x
        expected = b.bn2(b.conv2(b.act1(b.bn1(b.conv1(x))))) + shortcut
    torch.testing.assert_close(f[block_name], expected)
    assert f[block_name].min() < 0 <= f["out"].min()  # the site is before the ReLU, the block output after it
    torch.testing.assert_close(F.relu(f[block_name]), f["out"])


@pytest.mark.parametrize("block_name", ["blocks.2.0", "blocks.2.2"])  # no skip (stride 2); skip
def test_mobilenet_site_is_the_linear_bottleneck_after_its_bn(nets, block_name):
    model = nets[MOBILENET]
    site, b = _site(model, block_name), model.get_submodule(block_name)
    assert site == Site(block_name, block_name, "output")
    assert isinstance(b.bn3.act, nn.Identity)  # the projection BN has no activation to stop before
    f = _tap(model, [site, Site("in", block_name, "input"), Site("pwl", f"{block_name}.bn3", "input")], _images())
    expected = _bn(b.bn3, f["pwl"]) + (f["in"] if b.has_skip else 0)
    assert b.has_skip == (block_name == "blocks.2.2")
    torch.testing.assert_close(f[block_name], expected)
    assert f[block_name].min() < 0


def test_mobilenet_site_with_an_activation_is_its_input():
    """MobileNetV3's last stage (ConvBnAct: conv, BN, hard-swish): the site is the BN output, before the act."""
    model = _net("mobilenetv3_small_050")
    site = sites.candidate_sites(model)[-1]
    assert site == Site("blocks.5.0", "blocks.5.0.bn1.act", "input")
    bn = model.get_submodule("blocks.5.0.bn1")
    f = _tap(model, [site, Site("conv", "blocks.5.0.bn1", "input"), Site("out", "blocks.5.0", "output")], _images())
    torch.testing.assert_close(f[site.name], _bn(bn, f["conv"]))
    torch.testing.assert_close(bn.act(f[site.name].clone()), f["out"])
    assert f[site.name].min() < -0.5 and f["out"].min() >= -0.375  # hard-swish's minimum


@pytest.mark.parametrize("block_name", ["stage3.0", "stage3.1"])  # stride 2 (two branches); stride 1 (split)
def test_shufflenet_site_is_the_block_output_after_the_channel_shuffle(nets, block_name):
    from torchvision.models.shufflenetv2 import channel_shuffle

    model = nets[SHUFFLENET]
    site, b = _site(model, block_name), model.get_submodule(block_name)
    assert site == Site(block_name, block_name, "output")
    f = _tap(model, [site, Site("in", block_name, "input")], _images())
    x = f["in"]
    with torch.no_grad():
        if b.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            joined = torch.cat((x1, b.branch2(x2)), dim=1)
        else:
            joined = torch.cat((b.branch1(x), b.branch2(x)), dim=1)
        assert not torch.equal(joined, channel_shuffle(joined, 2))  # the shuffle matters
    torch.testing.assert_close(f[block_name], channel_shuffle(joined, 2))
    assert f[block_name].min() >= 0  # torchvision: both halves have passed a ReLU


# --- FeatureTap -----------------------------------------------------------------------------------------------

def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", [TEACHER, MOBILENET, SHUFFLENET])
def test_feature_tap_changes_neither_outputs_nor_parameters_and_removes_its_hooks(nets, arch):
    model, x = nets[arch], _images()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = model(x)
    taps = sites.candidate_sites(model)
    f = _tap(model, taps, x)
    with torch.no_grad():
        with FeatureTap(model, taps):
            tapped = model(x)
    assert torch.equal(plain, tapped)
    assert set(f) == {s.name for s in taps}
    assert _no_hooks(model)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", [TEACHER, MOBILENET, SHUFFLENET])
def test_feature_tap_keeps_gradients_in_training(arch):
    x = _images(4)

    def grads(tapped: bool):
        model = _net(arch).train()
        with FeatureTap(model, sites.default_sites(model) if tapped else []) as tap:
            model(x).square().mean().backward()
        return [p.grad.clone() for p in model.parameters()], tap.features

    plain, _ = grads(False)
    tapped, features = grads(True)
    assert all(torch.equal(a, b) for a, b in zip(plain, tapped))  # the clone leaves backward untouched
    assert all(t.requires_grad for t in features.values())  # a feature loss can reach the student


def test_feature_tap_unknown_module_raises_and_leaves_no_hook(nets):
    model = nets[TEACHER]
    good = sites.default_sites(model)[0]
    with pytest.raises(ValueError, match="no module 'layer9.act2'"):
        with FeatureTap(model, [good, Site("bad", "layer9.act2", "input")]):
            pass
    assert _no_hooks(model)


# --- families and their errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("arch,fam", [(TEACHER, "resnet"), (MOBILENET, "mobilenet"), (SHUFFLENET, "shufflenet")])
def test_family(nets, arch, fam):
    assert sites.family(nets[arch]) == fam


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small"])  # torchvision's MobileNets
def test_torchvision_mobilenets_take_their_linear_bottlenecks(arch):
    model = cnn.build(arch, 3)
    assert type(model).__module__.startswith("torchvision") and sites.family(model) == "mobilenet"
    assert all(s.hook == "output" and s.module.startswith("features.") for s in sites.candidate_sites(model))


def test_unsupported_and_mixed_networks_are_rejected(nets):
    import torchvision

    with pytest.raises(ValueError, match="unsupported network Sequential: .*ResNet \\(timm"):
        sites.family(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))
    with pytest.raises(ValueError, match="unsupported network ResNet"):  # torchvision's: one ReLU, called twice
        sites.family(torchvision.models.resnet18(weights=None, num_classes=2))
    with pytest.raises(ValueError, match="mixes the blocks of \\['resnet', 'shufflenet'\\]"):
        sites.candidate_sites(nn.ModuleList([nets[TEACHER], nets[SHUFFLENET]]))


# --- shapes and pairs ---------------------------------------------------------------------------------------

def test_default_sites_are_the_last_block_at_each_resolution(nets):
    names = {a: [s.name for s in sites.default_sites(m)] for a, m in nets.items()}
    assert names == {TEACHER: ["layer1.1", "layer2.1", "layer3.1", "layer4.1"],
                     MOBILENET: ["blocks.0.0", "blocks.1.1", "blocks.2.2", "blocks.4.2", "blocks.6.0"],
                     SHUFFLENET: ["stage2.3", "stage3.7", "stage4.3"]}
    shapes = sites.site_shapes(nets[TEACHER], sites.default_sites(nets[TEACHER]), SIZE)
    assert list(shapes.values()) == [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]


def test_site_shapes_restores_every_module_mode():
    model = _net(MOBILENET).train()
    model.blocks[1].eval()  # e.g. a frozen part
    modes = [m.training for m in model.modules()]
    sites.site_shapes(model, sites.default_sites(model), SIZE)
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize("student,expected", [
    (MOBILENET, [("layer1.1", "blocks.1.1"), ("layer2.1", "blocks.2.2"), ("layer3.1", "blocks.4.2")]),
    (SHUFFLENET, [("layer2.1", "stage2.3"), ("layer3.1", "stage3.7")]),
])
def test_pair_sites_match_spatial_sizes_and_keep_fewer_student_channels(nets, student, expected):
    t, s = nets[TEACHER], nets[student]
    pairs = sites.pair_sites(t, s, SIZE)
    assert [(p.teacher.name, p.student.name) for p in pairs] == expected
    t_shapes = sites.site_shapes(t, [p.teacher for p in pairs], SIZE)
    s_shapes = sites.site_shapes(s, [p.student for p in pairs], SIZE)
    for p in pairs:
        (tc, th, tw), (sc, sh, sw) = t_shapes[p.teacher.name], s_shapes[p.student.name]
        assert p.pool_to is None and (th, tw) == (sh, sw) and sh >= 2  # 1x1 maps skipped
        assert sc < tc  # channel matching picks n of the teacher's m channels


def test_match_sizes_prefers_equal_then_pools_the_nearest_larger_teacher_map():
    teacher = {"t16": (16, 16), "t8": (8, 8), "t2": (2, 2)}
    student = {"s32": (32, 32), "s8": (8, 8), "s4": (4, 4), "s1": (1, 1)}
    assert sites.match_sizes(teacher, student) == [("t8", "s8", None), ("t8", "s4", (4, 4))]
    assert sites.match_sizes(teacher, student, min_size=1)[-1] == ("t2", "s1", (1, 1))


def test_resolve_pairs_checks_names_and_sizes(nets):
    t, s = nets[TEACHER], nets[SHUFFLENET]
    pairs = sites.resolve_pairs(t, s, [("layer1.1", "stage2.3"), ("layer3.0", "stage3.0")], SIZE)
    assert [p.pool_to for p in pairs] == [(4, 4), None]  # 8x8 teacher map pooled to the student's 4x4
    with pytest.raises(ValueError, match="unknown student site 'stage9.0'; valid: stage2.0, stage2.1, .*stage4.3$"):
        sites.resolve_pairs(t, s, [("layer1.1", "stage9.0")], SIZE)
    with pytest.raises(ValueError, match="unknown teacher site 'layer1'; valid: layer1.0, layer1.1, layer2.0"):
        sites.resolve_pairs(t, s, [("layer1", "stage2.3")], SIZE)
    with pytest.raises(ValueError, match="teacher map 2x2 is smaller than the student's 4x4"):
        sites.resolve_pairs(t, s, [("layer3.1", "stage2.3")], SIZE)


# --- CNNs by name -------------------------------------------------------------------------------------------

def test_build_timm_then_torchvision_and_reject_unknown_names():
    timm_net, tv_net = cnn.build(TEACHER, 7), cnn.build(SHUFFLENET, 7)
    assert type(timm_net).__module__ == "timm.models.resnet"
    assert type(tv_net).__module__ == "torchvision.models.shufflenetv2" and tv_net.fc.out_features == 7
    with torch.no_grad():
        assert timm_net.eval()(_images()).shape == (2, 7)
    assert (cnn.library(TEACHER), cnn.library(SHUFFLENET), cnn.library("no_such_net")) == ("timm", "torchvision", None)
    assert cnn.known(MOBILENET) and not cnn.known("no_such_net")
    with pytest.raises(ValueError, match="unknown CNN architecture 'no_such_net'.*timm.list_models.*torchvision"):
        cnn.build("no_such_net", 7)
    with pytest.raises(ValueError, match="did you mean .*resnet18"):
        cnn.build("resnet_18", 7)


@pytest.mark.parametrize("arch, built", [(TEACHER, 4), (MOBILENET, 2), (SHUFFLENET, 4)])
def test_stem_stride_shrinks_the_stem_only(arch, built):
    """The CIFAR variants' stems: the first site's map grows by built / stride on each side, no weight changes
    shape (a checkpoint of one form loads into the other), and a stride the stem cannot reach is refused."""
    plain = cnn.build(arch, 5)
    first = sites.candidate_sites(plain)[0]
    (c, h, w), = sites.site_shapes(plain, [first], SIZE).values()
    assert cnn.stem_stride(plain) == built
    for stride in (2, 1):
        net = cnn.build(arch, 5, stride)
        assert cnn.stem_stride(net) == stride
        assert sites.site_shapes(net, [first], SIZE)[first.name] == (c, h * built // stride, w * built // stride)
        net.load_state_dict(plain.state_dict())  # same names, same shapes
    with pytest.raises(ValueError, match="cannot be made"):
        cnn.build(arch, 5, 4 if built == 2 else 3)


def test_a_cnn_checkpoint_is_rebuilt_with_its_stem(tmp_path):
    from pipeline.models import classifier

    torch.manual_seed(0)
    net = _randomise_bn(classifier.build_cnn(SHUFFLENET, 5, 1)).eval()
    classifier.save(net, tmp_path, classifier.cnn_meta(SHUFFLENET, 1, list("abcde")))
    loaded, meta = classifier.load(tmp_path)
    assert meta["stem_stride"] == 1 and cnn.stem_stride(loaded) == 1
    with torch.no_grad():
        assert torch.equal(loaded(_images()), net(_images()))


def test_importing_cnn_imports_no_model_library():
    code = "import sys, pipeline.models.cnn; print(sorted({'torch', 'timm', 'torchvision'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"
