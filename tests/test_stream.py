"""The streaming training-data source: sample indices, step order, augmentation, skips, loader, bench."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data.images import SkipLog, decode_image, square_view
from distill.data.shards import add_member
from distill.data.stream import FolderIndex, ShardIndex, StreamingImages, stream_loader, warn_skipped
from workbench.bench.data import bench_data, format_data_bench


def image_bytes(seed: int, size: tuple[int, int] = (48, 40), kind: str = "JPEG") -> bytes:
    """A random smooth image (width, height) as JPEG or PNG bytes."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    small.resize(size, Image.Resampling.BICUBIC).save(buffer, kind)
    return buffer.getvalue()


def make_folder(root: Path, count: int) -> list[bytes]:
    """`count` images spread over nested subfolders (every third a PNG), and a non-image file."""
    images = []
    for i in range(count):
        kind = "PNG" if i % 3 == 0 else "JPEG"
        path = root / f"d{i % 2}" / ("deep" if i % 4 == 0 else "") / f"{i:03d}.{kind.lower()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        images.append(image_bytes(i, kind=kind))
        path.write_bytes(images[-1])
    (root / "notes.txt").write_text("not an image")
    return images


def make_shard(path: Path, first: int, count: int) -> list[bytes]:
    """A WebDataset shard of `count` samples (`000001.jpg` + `000001.cls`)."""
    images = [image_bytes(first + i) for i in range(count)]
    with tarfile.open(path, "w") as tar:
        for i, data in enumerate(images):
            add_member(tar, f"{first + i:06d}.jpg", data)
            add_member(tar, f"{first + i:06d}.cls", str(i % 3).encode())
    return images


def steps_of(dataset: StreamingImages, steps: range) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids and images of a range of steps, concatenated."""
    batches = [dataset[s] for s in steps]
    return torch.cat([b.ids for b in batches]), torch.cat([b.images for b in batches])


def test_folder_index_is_recursive_sorted_and_compact(tmp_path):
    images = make_folder(tmp_path, 12)
    index = FolderIndex(tmp_path)
    assert len(index) == 12
    names = [index.read(i)[1] for i in range(12)]
    assert names == sorted(names) and all(Path(n).suffix in (".jpeg", ".png") for n in names)
    assert any("/deep/" in n for n in names)
    assert sorted(index.read(i)[0] for i in range(12)) == sorted(images)
    assert isinstance(index.paths, np.ndarray) and index.offsets.dtype == np.int64


def test_shard_index_records_image_members(tmp_path):
    images = make_shard(tmp_path / "a-0.tar", 1, 5) + make_shard(tmp_path / "a-1.tar", 6, 4)
    index = ShardIndex(str(tmp_path / "a-*.tar"))
    assert len(index) == 9
    assert [index.read(i)[0] for i in range(9)] == images
    assert index.read(0)[1] == "a-0.tar:000001.jpg" and index.read(8)[1] == "a-1.tar:000009.jpg"
    assert index.shard_ids.tolist() == [0] * 5 + [1] * 4


def test_order_is_a_permutation_per_epoch_and_resumes(tmp_path):
    make_folder(tmp_path, 12)
    dataset = StreamingImages(f"folder:{tmp_path}", 16, global_batch=4, seed=3)
    ids, images = steps_of(dataset, range(6))  # two epochs
    assert sorted(ids[:12].tolist()) == list(range(12)) and sorted(ids[12:].tolist()) == list(range(12))
    assert ids[:12].tolist() != ids[12:].tolist()
    assert images.shape == (24, 3, 16, 16) and images.dtype == torch.uint8
    fresh_ids, fresh_images = steps_of(StreamingImages(f"folder:{tmp_path}", 16, 4, seed=3), range(4, 6))
    assert torch.equal(fresh_ids, ids[16:]) and torch.equal(fresh_images, images[16:])
    other_seed = StreamingImages(f"folder:{tmp_path}", 16, 4, seed=4)
    assert not torch.equal(steps_of(other_seed, range(3))[0], ids[:12])


def test_two_ranks_together_give_the_global_batch(tmp_path):
    make_shard(tmp_path / "s.tar", 0, 10)
    source = f"shards:{tmp_path / 's.tar'}"
    single = StreamingImages(source, 16, global_batch=6, seed=0)
    ranks = [StreamingImages(source, 16, global_batch=6, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for step in (0, 1, 2):  # step 1 straddles two epochs
        whole, parts = single[step], [rank[step] for rank in ranks]
        assert torch.equal(torch.cat([p.ids for p in parts]), whole.ids)
        assert torch.equal(torch.cat([p.images for p in parts]), whole.images)
    with pytest.raises(ValueError, match="split evenly"):
        StreamingImages(source, 16, global_batch=5, seed=0, world_size=2)


def test_loader_workers_and_start_step_give_the_same_batches(tmp_path):
    make_folder(tmp_path, 10)
    dataset = StreamingImages(f"folder:{tmp_path}", 16, global_batch=4, seed=1)
    in_process = list(stream_loader(dataset, 0, 6, workers=0))
    with_workers = list(stream_loader(dataset, 0, 6, workers=2))
    resumed = list(stream_loader(StreamingImages(f"folder:{tmp_path}", 16, 4, seed=1), 3, 6, workers=0))
    assert [b.step for b in with_workers] == list(range(6)) and [b.step for b in resumed] == [3, 4, 5]
    for a, b in zip(in_process, with_workers, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)
    for a, b in zip(in_process[3:], resumed, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)


def test_augmentation_varies_with_the_step_and_is_reproducible(tmp_path):
    make_folder(tmp_path, 4)
    dataset = StreamingImages(f"folder:{tmp_path}", 24, global_batch=4, seed=0)
    first, second = dataset[0], dataset[1]  # each step is a whole epoch: the same images, other views
    views = [b.images[b.ids.argsort()] for b in (first, second)]
    assert not torch.equal(views[0], views[1])
    assert torch.equal(StreamingImages(f"folder:{tmp_path}", 24, 4, seed=0)[1].images, second.images)


def test_no_scale_gives_centre_views(tmp_path):
    for i, size in enumerate([(120, 96), (96, 120), (64, 64)]):  # wide, tall, square
        (tmp_path / f"{i}.jpg").write_bytes(image_bytes(i, size))
    dataset = StreamingImages(f"folder:{tmp_path}", 24, global_batch=3, seed=0, scale=None, flip=0.0)
    batch = dataset[0]
    for sample, view in zip(batch.ids.tolist(), batch.images, strict=True):
        expected = square_view(decode_image(dataset.index.read(sample)[0]), 24).mul(255)
        assert (view.float() - expected).abs().mean() < 2


def test_corrupt_file_is_replaced_named_and_warned_once(tmp_path):
    make_folder(tmp_path, 5)
    corrupt = tmp_path / "d0" / "zz_corrupt.jpg"
    corrupt.write_bytes(image_bytes(99)[:60])
    dataset = StreamingImages(f"folder:{tmp_path}", 16, global_batch=6, seed=0)
    batches = [dataset[s] for s in range(2)]
    for batch in batches:
        assert batch.skipped == [str(corrupt)] and len(batch.ids) == 6
        assert str(corrupt) not in [dataset.index.read(i)[1] for i in batch.ids.tolist()]
    log = SkipLog()
    with pytest.warns(UserWarning, match="zz_corrupt.jpg") as caught:
        for batch in batches:
            warn_skipped(batch, log)
    assert log.skipped == [str(corrupt)] and len(caught) == 1


def test_only_unreadable_images_raise_one_line(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"not a png")
    with pytest.raises(RuntimeError, match="consecutive unreadable images") as error:
        StreamingImages(f"folder:{tmp_path}", 16, global_batch=2, seed=0)[0]
    assert "\n" not in str(error.value)


def test_truncated_shard_member_is_skipped_with_a_warning(tmp_path):
    shard = tmp_path / "cut.tar"
    make_shard(shard, 0, 4)
    with tarfile.open(shard) as tar:
        last = tar.getmember("000003.jpg")
    shard.write_bytes(shard.read_bytes()[: last.offset_data + last.size // 2])
    with pytest.warns(UserWarning, match=r"cut\.tar: 1 truncated member\(s\) skipped$"):
        dataset = StreamingImages(f"shards:{shard}", 16, global_batch=3, seed=0)
    assert len(dataset.index) == 3 and dataset.index.truncated == 1
    assert sorted(dataset[0].ids.tolist()) == [0, 1, 2]


@pytest.mark.parametrize(
    ("source", "error", "message"),
    [
        ("folder:{tmp}/missing", FileNotFoundError, "image folder not found"),
        ("folder:{tmp}/empty", ValueError, "no JPEG/PNG/WebP images"),
        ("shards:{tmp}/none-*.tar", FileNotFoundError, "tar shard"),
        ("shards:{tmp}/labels.tar", ValueError, "no JPEG/PNG/WebP image members"),
        ("scenes", ValueError, "folder:<path> or shards:<glob>"),
    ],
)
def test_bad_sources_give_one_line_errors(tmp_path, source, error, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with tarfile.open(tmp_path / "labels.tar", "w") as tar:
        add_member(tar, "000001.cls", b"1")
    with pytest.raises(error, match=message) as caught:
        StreamingImages(source.format(tmp=tmp_path), 16, global_batch=2, seed=0)
    assert "\n" not in str(caught.value)


def test_bench_data_runs_on_tiny_corpora(tmp_path):
    rows = bench_data(sizes=(40, 80), workers=(0, 1), side=32, batch=8, steps=2, root=tmp_path)
    throughput = [r for r in rows if r["kind"] == "throughput"]
    assert {(r["images"], r["source"], r["workers"]) for r in throughput} == {
        (n, s, w) for n in (40, 80) for s in ("folder", "shards") for w in (0, 1)
    }
    assert all(r["images_per_s"] > 0 for r in throughput)
    assert len(list((tmp_path / "jpeg-80" / "images").rglob("*.jpg"))) == 80
    text = format_data_bench(rows)
    assert "images/s" in text and "peak RSS, 80 / 40 images" in text
