"""Random crops of the compression branch's recipes (`crop_padding`): the crop itself, the batch it gives, and
that a teacher's outputs are then computed on the crops instead of looked up (equal to the lookup where the
crop is the image itself)."""
from __future__ import annotations

import pytest
import torch

from pipeline.compression import data as D
from pipeline.compression.base import Batch
from pipeline.compression.trainer import prepare
from pipeline.compression.registry import get_method
from pipeline.models.classifier import image_input
from tests.test_compression_methods import _context, teacher_cnn  # noqa: F401 (a fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_crop_is_a_window_of_the_zero_padded_image():
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5) + 1  # no zero pixel
    corners = torch.tensor([[2, 2], [0, 4]])  # the image itself; shifted 2 down and 2 right
    out = D.apply_crops(images, corners, padding=2)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out[0], images[0])
    # corner (0, 4) of the padded copy: rows -2..1 (two of zeros), columns 2..6 (columns 3, 4 real, then zeros)
    assert torch.equal(out[1, :, :2], torch.zeros(3, 2, 5, dtype=torch.uint8))
    assert torch.equal(out[1, :, 2:, :3], images[1, :, :2, 2:])
    assert torch.equal(out[1, :, :, 3:], torch.zeros(3, 4, 2, dtype=torch.uint8))


def test_crop_corners_cover_every_offset_and_follow_the_generator():
    g = torch.Generator().manual_seed(0)
    corners = D.random_crops(4000, 4, g)
    assert corners.shape == (4000, 2) and corners.min() == 0 and corners.max() == 8
    assert len(torch.unique(corners[:, 0])) == 9
    assert torch.equal(corners, D.random_crops(4000, 4, torch.Generator().manual_seed(0)))


def test_without_crops_the_batch_is_as_before(teacher_cnn):
    ctx = _context("kd", teacher_cnn)
    batch = prepare(get_method("kd")(ctx)).batch(torch.arange(8))
    assert batch.pixels is None  # flips only: the teacher's logits are looked up


def test_with_crops_the_batch_carries_its_pixels_and_the_flips_come_first(teacher_cnn):
    plain = _context("kd", teacher_cnn)
    cropped = _context("kd", teacher_cnn, crop_padding=4)
    idx = torch.arange(8)
    a = prepare(get_method("kd")(plain)).batch(idx)
    b = prepare(get_method("kd")(cropped)).batch(idx)
    assert torch.equal(a.flips, b.flips)  # the same flips: crops are drawn after them
    assert b.pixels is not None and b.pixels.dtype == torch.uint8
    assert torch.equal(b.images, image_input(b.pixels))
    assert not torch.equal(a.images, b.images)


@pytest.mark.parametrize("method", ["kd", "fitnet"])
def test_the_teacher_runs_on_crops_and_agrees_with_the_lookup_on_uncropped_ones(teacher_cnn, method):
    ctx = _context(method, teacher_cnn, crop_padding=2)
    m = get_method(method)(ctx)
    idx = torch.arange(8)
    flips = torch.tensor([True, False] * 4)
    pixels = D.apply_flips(D.apply_crops(ctx.task.train_images[idx], torch.full((8, 2), 2), 2), flips)
    on_crops = Batch(image_input(pixels), ctx.task.train_labels[idx], idx, flips, pixels)
    looked_up = Batch(image_input(pixels), ctx.task.train_labels[idx], idx, flips)
    if method == "kd":
        assert torch.allclose(ctx.teacher_logits_of(on_crops), ctx.teacher_logits_of(looked_up), atol=1e-5)
    else:
        for x, y in zip(m.sites.teacher_maps_of(on_crops), m.sites.teacher_maps_of(looked_up)):
            assert torch.allclose(x, y, atol=1e-5)
    terms = m.terms(on_crops)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in ctx.teacher.module.parameters())
