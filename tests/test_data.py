"""Image folders, tar shards, bundled photos and Fashion-MNIST."""

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data.fashion_mnist import FASHION_CLASSES, load_fashion_mnist
from distill.data.folder import ImageFolder
from distill.data.images import LabeledImage, decode_image, square_view, stack_views
from distill.data.photos import load_photo, photo_names
from distill.data.shards import TarShards
from distill.data.views import build_views, mixture_counts


def encoded(mode: str, size: tuple[int, int], fmt: str, color: object) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def class_folder(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "cats" / "a.jpg").write_bytes(encoded("RGB", (40, 30), "JPEG", (200, 10, 10)))
    (tmp_path / "cats" / "b.png").write_bytes(encoded("L", (20, 20), "PNG", 128))
    (tmp_path / "dogs" / "c.webp").write_bytes(encoded("RGBA", (16, 24), "WEBP", (0, 0, 255, 0)))
    good = encoded("RGB", (64, 64), "JPEG", (1, 2, 3))
    (tmp_path / "dogs" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_classes_conversion_and_corrupt_file_is_skipped_and_reported(class_folder):
    folder = ImageFolder(class_folder)
    assert folder.classes == ["cats", "dogs"]
    assert len(folder) == 4  # the .txt is not an image file
    with pytest.warns(UserWarning, match=r"truncated\.jpg.*1 skipped"):
        items = list(folder)
    assert [i.name for i in items] == ["cats/a.jpg", "cats/b.png", "dogs/c.webp"]
    assert [i.label for i in items] == [0, 0, 1]
    assert folder.skips.skipped == [str(class_folder / "dogs" / "truncated.jpg")]
    assert all(i.image.shape[0] == 3 and i.image.dtype == torch.float32 for i in items)
    grey = items[1].image
    assert torch.allclose(grey, torch.full_like(grey, 128 / 255))  # greyscale replicated to RGB
    assert torch.allclose(items[2].image, torch.ones_like(items[2].image), atol=0.02)  # transparent -> white
    assert items[0].image[0].mean() > 0.7 and items[0].image[1].mean() < 0.1


def test_flat_folder_is_unlabeled(tmp_path):
    (tmp_path / "x.png").write_bytes(encoded("RGB", (8, 8), "PNG", (0, 0, 0)))
    folder = ImageFolder(tmp_path)
    assert folder.classes == [] and [i.label for i in folder] == [-1]


def test_empty_and_missing_folders_give_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="no JPEG/PNG/WebP images in"):
        ImageFolder(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"image folder not found: .*nope"):
        ImageFolder(tmp_path / "nope")


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_tar_shards_group_by_key_read_labels_and_skip_corrupt(tmp_path):
    shard = tmp_path / "train-000.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "s/000.jpg", encoded("RGB", (32, 16), "JPEG", (0, 255, 0)))
        add_member(tar, "s/000.cls", b"3")
        add_member(tar, "s/001.png", b"garbage")
        add_member(tar, "s/001.cls", b"1")
        add_member(tar, "s/002.webp", encoded("RGB", (8, 8), "WEBP", (9, 9, 9)))
    shards = TarShards(str(tmp_path / "train-*.tar"))
    with pytest.warns(UserWarning, match=r"train-000\.tar:s/001\.png"):
        items = list(shards)
    assert [(i.name, i.label) for i in items] == [
        ("train-000.tar:s/000.jpg", 3),
        ("train-000.tar:s/002.webp", -1),
    ]
    assert items[0].image.shape == (3, 16, 32)
    assert len(shards.skips.skipped) == 1


def test_truncated_shard_keeps_what_was_read(tmp_path):
    shard = tmp_path / "a.tar"
    with tarfile.open(shard, "w") as tar:
        add_member(tar, "000.png", encoded("RGB", (8, 8), "PNG", (1, 1, 1)))
        add_member(tar, "001.png", encoded("RGB", (300, 300), "PNG", (5, 50, 100)) + b"x" * 4096)
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    shards = TarShards([shard])
    with pytest.warns(UserWarning, match=r"a\.tar:001\.png \(EOFError: truncated: the shard ends \d+ of its"):
        items = list(shards)
    assert [i.name for i in items] == ["a.tar:000.png"] and len(shards.skips.skipped) == 1


def test_missing_shards_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="tar shard"):
        TarShards(str(tmp_path / "none-*.tar"))


def test_square_view_and_stack():
    image = torch.rand(3, 30, 60)
    view = square_view(image, 16)
    assert view.shape == (3, 16, 16) and view.min() >= 0 and view.max() <= 1

    views, labels, names = stack_views(
        (LabeledImage(torch.rand(3, 10, 12), i, str(i)) for i in range(5)), 8, limit=3
    )
    assert views.shape == (3, 3, 8, 8) and labels.tolist() == [0, 1, 2] and names == ["0", "1", "2"]


def test_decode_rejects_non_images():
    with pytest.raises(OSError):
        decode_image(b"definitely not an image")


def test_bundled_photos_load_offline():
    names = photo_names()
    assert {"astronaut", "chelsea", "coffee", "rocket", "china", "flower"} <= set(names)
    chelsea = load_photo("chelsea")
    assert chelsea.shape == (3, 300, 451) and chelsea.dtype == torch.float32
    assert load_photo("camera").shape[0] == 3  # greyscale photo replicated
    assert load_photo("flower").shape == (3, 427, 640)
    with pytest.raises(KeyError, match="unknown photo 'nope'"):
        load_photo("nope")


def test_fashion_mnist_from_debian_package():
    try:
        images, labels = load_fashion_mnist("test", download=False)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.min() == 0 and labels.max() == len(FASHION_CLASSES) - 1
    assert np.bincount(labels.numpy()).tolist() == [1000] * 10


def test_fashion_mnist_missing_gives_instructions(tmp_path, monkeypatch):
    monkeypatch.setattr("distill.data.fashion_mnist.DEBIAN_DIR", tmp_path)
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", download=False)


def test_mixture_counts_split_by_share_and_refuse_bad_mixes():
    assert mixture_counts(10, {"scenes": 0.75, "photos": 0.25}) == {"scenes": 8, "photos": 2}
    assert mixture_counts(100, {"scenes": 2, "photos": 1, "fashion": 1}) == {
        "scenes": 50,
        "photos": 25,
        "fashion": 25,
    }
    for bad in ({"scenes": 1, "imagenet": 1}, {"scenes": -1, "photos": 2}, {}):
        with pytest.raises(ValueError, match=r"data\.mix"):
            mixture_counts(10, bad)


def is_grey(views):
    return (views[:, 0] == views[:, 1]).flatten(1).all(1) & (views[:, 1] == views[:, 2]).flatten(1).all(1)


def test_mixed_views_hold_fashion_mnist_train_images_in_their_share():
    try:
        load_fashion_mnist("train", download=False)
    except FileNotFoundError as error:
        pytest.skip(str(error))
    mix = {"scenes": 0.5, "photos": 0.25, "fashion": 0.25}
    views = build_views("mixed", 16, 32, seed=1, mix=mix)
    again = build_views("mixed", 16, 32, seed=1, mix=mix)
    assert views.shape == (16, 3, 32, 32) and views.dtype == torch.uint8 and torch.equal(views, again)
    fashion = build_views("fashion", 4, 32, seed=1)
    found = [any(torch.equal(f, v) for v in views) for f in fashion]
    assert all(found) and is_grey(fashion).all()  # the share's four Fashion-MNIST images, shuffled in


def test_missing_fashion_mnist_gives_its_share_to_scenes_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr("distill.data.fashion_mnist.DEBIAN_DIR", tmp_path)
    monkeypatch.setenv("EUPE_CACHE", str(tmp_path))
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.warns(UserWarning, match="share goes to generated scenes"):
        views = build_views("mixed", 8, 32, seed=0, mix={"scenes": 0.5, "fashion": 0.5})
    assert views.shape == (8, 3, 32, 32) and torch.equal(
        views,
        build_views("scenes", 8, 32, seed=0)[torch.randperm(8, generator=torch.Generator().manual_seed(0))],
    )
