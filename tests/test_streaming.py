"""Streaming data (issue 12, part 1): image sources decoded on demand, read through DataLoader workers.

The check that matters: the batches a training sees are the same images in the same order whichever way
they are read, so a folder benchmark streamed from disk trains exactly as the same images held in memory."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from pipeline import optim
from pipeline.data import load_task, loader, save_task
from pipeline.data.facets import build_facet_task
from pipeline.data.folder import build_folder_task
from pipeline.data.sources import FileImages, file_digest, from_description
from pipeline.errors import InputError


@pytest.fixture
def workers():
    """Set the process-wide worker count for one test, and put the default back after it."""
    def use(count: int) -> None:
        loader.configure(count, pin_memory=False)
    yield use
    loader.configure(0, pin_memory=False)


@pytest.fixture(scope="module")
def embedded():
    """The embedded default's kind of task (facet world), small."""
    return build_facet_task("shape", image_size=32, train_per_class=4, test_per_class=2, seed=0)


def write_folder(task, root):
    """`task`'s images as lossless PNG files in the folder benchmark's layout, one class folder per class."""
    for split, images, labels in (("train", task.train_images, task.train_labels),
                                  ("test", task.test_images, task.test_labels)):
        for i, (image, label) in enumerate(zip(images, labels.tolist())):
            folder = root / split / f"c{label:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return root


def training_order(task, batch_size: int = 5, steps: int = 7):
    return list(optim.batches(len(task.train_labels), batch_size, steps, seed=3))


def test_loader_gives_the_in_memory_batches(embedded):
    order = training_order(embedded)
    got = list(loader.batches(embedded.train_images, order))
    assert len(got) == len(order)
    for indices, batch in zip(order, got):
        assert batch.dtype == torch.uint8 and torch.equal(batch, embedded.train_images[indices])


@pytest.mark.parametrize("count", [0, 2])
def test_folder_streams_the_same_batches_as_memory(embedded, tmp_path, workers, count):
    """The same pixels written as files: the streamed batches equal the in-memory ones, item for item."""
    workers(count)
    folder = build_folder_task(write_folder(embedded, tmp_path / "shape"), name="shape", image_size=32,
                               templates=["a photo of a {}."])
    assert isinstance(folder.train_images, FileImages) and folder.train_images.shape == embedded.train_images.shape
    # Class folders sort as the labels do and files keep their order within a class: the same item order.
    assert torch.equal(folder.train_labels, embedded.train_labels.sort(stable=True).values)
    same = embedded.train_labels.argsort(stable=True)  # folder item -> embedded item
    order = training_order(embedded)
    for indices, batch in zip(order, loader.batches(folder.train_images, order)):
        assert torch.equal(batch, embedded.train_images[same[indices]])
    test = torch.cat(list(loader.sequential(folder.test_images, 3)))
    assert torch.equal(test, embedded.test_images[embedded.test_labels.argsort(stable=True)])


def test_source_indexes_like_a_tensor(embedded, tmp_path):
    folder = build_folder_task(write_folder(embedded, tmp_path / "shape"), name="shape", image_size=32,
                               templates=["{}"])
    images, memory = folder.test_images, folder.test_images[:]
    assert len(images) == len(memory) and (images.dtype, images.ndim) == (torch.uint8, 4)
    assert torch.equal(images[1], memory[1]) and torch.equal(images[-1], memory[-1])
    assert torch.equal(images[1:3], memory[1:3]) and torch.equal(images[torch.tensor([2, 0])], memory[[2, 0]])
    assert torch.equal(images[0, 1], memory[0, 1])
    assert torch.equal(torch.stack(list(images)), memory)  # iteration stops at the end
    with pytest.raises(IndexError, match=r"image 99 out of range for \d+ images"):
        images[99]


def test_prepared_task_keeps_an_index_not_pixels(embedded, tmp_path):
    folder = build_folder_task(write_folder(embedded, tmp_path / "shape"), name="shape", image_size=32,
                               templates=["{}"])
    save_task(folder, tmp_path / "prepared")
    assert (tmp_path / "prepared" / "train.images.json").is_file()
    from pipeline import io
    assert set(io.load_tensors(tmp_path / "prepared" / "train.safetensors")) == {"labels"}
    loaded = load_task(tmp_path / "prepared")
    assert isinstance(loaded.train_images, FileImages) and loaded.train_images.files == folder.train_images.files
    assert torch.equal(loaded.train_images[:], folder.train_images[:])
    # An in-memory task still keeps its pixels, and nothing else beside them.
    save_task(embedded, tmp_path / "memory")
    assert not (tmp_path / "memory" / "train.images.json").exists()
    assert torch.equal(load_task(tmp_path / "memory").train_images, embedded.train_images)


def test_a_changed_image_changes_the_index(embedded, tmp_path):
    """Train stages depend on the prepared index, not the image folder: an edited image must change it."""
    root = write_folder(embedded, tmp_path / "shape")
    before = build_folder_task(root, name="shape", image_size=32, templates=["{}"]).train_images.describe()
    path = sorted((root / "train" / "c00").iterdir())[0]
    size, digest = file_digest(path)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
    after = build_folder_task(root, name="shape", image_size=32, templates=["{}"]).train_images.describe()
    assert after["files"] == before["files"] and after["digests"] != before["digests"]
    assert [size, digest] in before["digests"] and list(file_digest(path)) in after["digests"]


def test_bad_descriptions_and_files_are_named(embedded, tmp_path):
    with pytest.raises(InputError, match=r"x\.json: expected an image source object"):
        from_description({"kind": "tape"}, "x.json")
    with pytest.raises(InputError, match=r"x\.json: invalid files image source"):
        from_description({"kind": "files", "image_size": 8, "files": ["a.png"], "digests": []}, "x.json")
    root = write_folder(embedded, tmp_path / "shape")
    (root / "train" / "c00" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"broken\.png: cannot read image"):
        build_folder_task(root, name="shape", image_size=32, templates=["{}"])


def test_mtil_source_decodes_in_workers(tmp_path, monkeypatch, workers):
    """An MTIL split's source goes to worker processes without its torchvision data set (reopened there)."""
    import pickle

    from test_mtil import fake_dtd

    from pipeline.data.images import fit_image
    from pipeline.data.mtil import build_mtil_task
    from pipeline.data.mtil_sets import mtil_split

    fake_dtd(tmp_path, monkeypatch)
    task = build_mtil_task(tmp_path, "DTD", image_size=16, few_shot=None, seed=0)
    task.test_images[0]  # opens the data set in this process
    assert pickle.loads(pickle.dumps(task.test_images))._dataset is None
    workers(2)
    streamed = torch.cat(list(loader.sequential(task.test_images, 2)))
    part = mtil_split(tmp_path, "DTD", "test")
    assert torch.equal(streamed, torch.stack([torch.tensor(fit_image(part.dataset[i][0], 16)) for i in range(len(part.dataset))]))


def test_memory_benchmark_smoke(tmp_path):
    """`make bench-memory` on a micro size: every stage runs in its own process and reports its peak."""
    from pipeline import io
    from pipeline.tools.bench_memory import main

    out = tmp_path / "bench_memory.json"
    main(["--images", "20", "--classes", "2", "--source-size", "40", "--image-size", "32", "--steps", "2",
          "--pretrain-steps", "1", "--workers", "1", "--threads", "1", "--scratch", str(tmp_path / "s"), "--out", str(out)])
    result = io.read_json(out)
    run = result["runs"]["20"]
    assert run["train_images"] == 20 and run["pixels_in_memory_mb"] == round(20 * 3 * 32 * 32 / 2**20, 1)
    for key in ("prepare", "pretrain", "prototypes", "train@shapes"):
        assert run[key]["peak_rss_mb"] > 50 and result["peak_ratio_20_vs_20"][key] == 1.0
    assert len(list((tmp_path / "s" / "images_20" / "shapes" / "train").rglob("*.jpg"))) == 20


def test_augmentation_is_seeded_by_step_not_by_worker(embedded, tmp_path, workers):
    """open_clip's random resized crop: new crops every step, the same ones in every run and with any number
    of workers (the generator is seeded by (seed, step) where the batch is made)."""
    from pipeline.data.augment import RandomResizedCropBatch

    folder = build_folder_task(write_folder(embedded, tmp_path / "shape"), name="shape", image_size=32, templates=["{}"])
    order = training_order(embedded)
    augment = RandomResizedCropBatch(seed=7)
    runs = []
    for count in (0, 2, 2):
        workers(count)
        runs.append(list(loader.batches(folder.train_images, order, augment)))
    plain = list(loader.batches(folder.train_images, order))
    for step, (a, b, c, p) in enumerate(zip(*runs, plain)):
        assert a.dtype == torch.uint8 and a.shape == p.shape
        assert torch.equal(a, b) and torch.equal(a, c), step
        assert not torch.equal(a, p)  # cropped: 90-100 % of the area, resized back
    assert not torch.equal(runs[0][0], RandomResizedCropBatch(seed=8)(plain[0], 0, order[0]))
    assert torch.equal(runs[0][3], augment(plain[3], 3, order[3]))  # the same crops as the transform itself, in process
    # An image's crop depends on (seed, step, its index) alone: the same in half a batch (a rank's share).
    assert torch.equal(augment(plain[3][2:], 3, order[3][2:]), runs[0][3][2:])
