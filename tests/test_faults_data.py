"""Data under faults: 16-bit images, decompression bombs, damaged feature caches and stores, and the app's
encoder cache under load (bounded, and never stalling one request behind another's build)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from gradio.data_classes import ImageData
from PIL import Image, ImageFile
from torch import nn

from distill.data.folder import ImageFolder
from distill.data.images import decode_image, pil_to_tensor
from distill.data.shards import TarShards
from distill.data.stream import ShardIndex, StreamingImages
from distill.features import Features
from distill.targets.cache import FeatureCache
from distill.targets.store import FeatureStore
from distill.targets.store_format import StoreManifest
from distill.targets.store_write import write_shards
from workbench.explore.encoder_cache import EncoderCache
from workbench.explore.explorer import Explorer, open_image

BOMB_SIDE = 30_000  # 900 MP: above PIL's decompression-bomb limit (2 x 89.5 MP)


def png(width: int, height: int, depth: int, colour: int, rows: bytes | None = None) -> bytes:
    """A PNG of filtered scanlines `rows` (all zeros if None, compressed a block at a time, so a huge
    image costs little memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(1)
    if rows is None:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        row = b"\x00" + bytes((width * channels * depth + 7) // 8)
        parts = [compressor.compress(row * 1000) for _ in range(height // 1000)]
        data = b"".join(parts) + compressor.compress(row * (height % 1000))
    else:
        data = compressor.compress(rows)
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunks = (chunk(b"IHDR", header), chunk(b"IDAT", data + compressor.flush()), chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def ramp16() -> bytes:
    """A 16-bit greyscale PNG, 256 x 4, each row a 0..65535 ramp."""
    row = b"\x00" + np.linspace(0, 65535, 256).astype(">u2").tobytes()
    return png(256, 4, 16, 0, row * 4)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    data = png(BOMB_SIDE, BOMB_SIDE, 1, 0)
    assert len(data) < 1_000_000
    return data


def small_png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 32, 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# 16-bit images ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L", "I", "F"])
def test_deep_greyscale_modes_are_scaled_by_their_full_scale(mode):
    ramp = np.linspace(0, 1, 256)[None].repeat(3, 0)
    layout = {"I;16": "<u2", "I;16B": ">u2", "I;16L": "<u2", "I": "<i4", "F": "<f4"}[mode]
    values = ramp if mode == "F" else ramp * 65535
    image = Image.frombytes(mode, (256, 3), values.round(6).astype(layout).tobytes())
    tensor = pil_to_tensor(image)
    assert tensor.shape == (3, 3, 256) and float(tensor.min()) == 0 and float(tensor.max()) == 1
    assert abs(float(tensor.mean()) - 0.5) < 1e-3


def test_a_16_bit_png_decodes_to_its_grey_levels_in_training_and_in_the_app(tmp_path):
    assert Image.open(io.BytesIO(ramp16())).mode == "I;16"
    assert abs(float(decode_image(ramp16()).mean()) - 0.5) < 1e-3  # was 0.992: almost white
    path = tmp_path / "ramp.png"
    path.write_bytes(ramp16())
    assert abs(float(open_image(path).mean()) - 0.5) < 1e-3
    stream = StreamingImages(f"folder:{tmp_path}", side=16, global_batch=1, seed=0, scale=None, flip=0)
    assert abs(float(stream[0].images.float().mean()) / 255 - 0.5) < 0.01


PEAK_GROWTH = textwrap.dedent("""
    import json, resource, sys
    import torch
    from distill.data.images import decode_image
    from distill.data.stream import render_view

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    data = open(sys.argv[1], "rb").read()
    start = peak_mib()
    view = render_view(data, 64, (0.35, 1.0), 0.5, torch.Generator().manual_seed(0))
    streamed = peak_mib() - start
    image = decode_image(data)
    print(json.dumps({"stream_mib": streamed, "decode_mib": peak_mib() - start, "view": float(view.mean()),
                      "shape": list(image.shape), "image": float(image.mean()) * 255}))
""")


def test_a_large_flat_png_is_decoded_and_resized_in_bounded_memory(tmp_path):
    path = tmp_path / "flat.png"
    Image.new("L", (9000, 9000), 77).save(
        path
    )  # 81 MP greyscale in ~100 kB; was +1.5 GiB decoded, +1.9 streamed
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PEAK_GROWTH, str(path)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    grown = json.loads(done.stdout)
    assert grown["stream_mib"] < 250 and grown["decode_mib"] < 250, grown  # 81 MB is the 8-bit image itself
    assert grown["view"] == 77 and grown["shape"] == [3, 2250, 2250] and abs(grown["image"] - 77) < 1e-3


def test_32_bit_data_is_an_unreadable_image_not_a_white_one():
    image = Image.frombytes("I", (2, 1), np.array([0, 70_000], "<i4").tobytes())
    with pytest.raises(ValueError, match=r"mode I image with values 0 \.\. 70000, outside 0 \.\. 65535"):
        pil_to_tensor(image)


# decompression bombs ---------------------------------------------------------------------------------------


def test_a_decompression_bomb_is_skipped_and_counted_in_folders_shards_and_streams(tmp_path, bomb):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in (("a.png", small_png(10)), ("b_bomb.png", bomb), ("c.png", small_png(200))):
        (folder / name).write_bytes(data)
    images = ImageFolder(folder)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*b_bomb.png \(DecompressionBombError"):
        names = [item.name for item in images]
    assert names == ["a.png", "c.png"] and images.skips.skipped == [str(folder / "b_bomb.png")]

    shard = tmp_path / "train-0.tar"
    with tarfile.open(shard, "w") as tar:
        for name in ("a.png", "b_bomb.png", "c.png"):
            tar.add(folder / name, arcname=name)
    shards = TarShards(str(shard))
    with pytest.warns(UserWarning, match="b_bomb.png"):
        assert len(list(shards)) == 2
    assert shards.skips.skipped == ["train-0.tar:b_bomb.png"]

    stream = StreamingImages(f"folder:{folder}", side=8, global_batch=3, seed=0)
    batch = stream[0]
    assert batch.skipped == [str(folder / "b_bomb.png")] and len(batch.ids) == 3


def test_a_symlink_loop_or_a_dangling_link_is_skipped_and_counted_not_the_whole_folder(tmp_path):
    for name, data in (("a.png", small_png(10)), ("c.png", small_png(200))):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "b_loop.png").symlink_to("b_loop.png")
    (tmp_path / "d_dangling.png").symlink_to("gone.png")
    unreadable = [str(tmp_path / "b_loop.png"), str(tmp_path / "d_dangling.png")]
    images = ImageFolder(tmp_path)
    with pytest.warns(UserWarning, match=r"skipping unreadable image .*b_loop.png \(OSError: \[Errno 40\]"):
        assert [item.name for item in images] == ["a.png", "c.png"]
    assert images.skips.skipped == unreadable

    stream = StreamingImages(f"folder:{tmp_path}", side=8, global_batch=4, seed=0)
    batch = stream[0]  # each unreadable file is replaced by the next sample of the epoch
    assert sorted(set(batch.skipped)) == unreadable and len(batch.ids) == 4
    assert all(isinstance(error, OSError) for error in batch.errors)


def test_a_damaged_tar_header_loses_one_member_not_the_rest_of_the_shard(tmp_path):
    shard = tmp_path / "train-0.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(8):
            data = small_png(10 * i)
            info = tarfile.TarInfo(f"{i:03d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(shard) as tar:
        header = tar.getmember("001.png").offset
    with open(shard, "r+b") as file:
        file.seek(header)
        file.write(b"\xff" * 16)  # the second member's name: its header's checksum no longer matches
    where = rf"train-0\.tar: header of member 2 at byte {header} \(bad checksum; read on from byte \d+\)"
    kept = [f"train-0.tar:{i:03d}.png" for i in (0, 2, 3, 4, 5, 6, 7)]  # was 000.png alone, and no warning
    shards = TarShards(str(shard))
    with pytest.warns(UserWarning, match=where):
        assert [item.name for item in shards] == kept
    assert len(shards.skips.skipped) == 1
    with pytest.warns(UserWarning, match=rf"tar shard .*{where}$"):
        index = ShardIndex(str(shard))
    assert [index.name(i) for i in range(len(index))] == kept


def test_the_app_refuses_a_huge_greyscale_image_from_its_header_without_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    path.write_bytes(png(8000, 8000, 8, 0))  # 64 MP greyscale, 62 kB

    def never(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(Image.Image, "load", never)
    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"huge.png is 8000x8000 \(64 MP\); the limit is 40 MP"):
        open_image(path)
    with pytest.raises(ValueError, match=r"bomb.png is not a readable image \(DecompressionBombError\)"):
        (tmp_path / "bomb.png").write_bytes(png(BOMB_SIDE, 7000, 1, 0))  # 210 MP
        open_image(tmp_path / "bomb.png", max_pixels=10**12)  # PIL's own limit holds whatever ours is
    assert time.perf_counter() - start < 1


def test_uploads_reach_the_app_as_the_files_sent(tmp_path):
    from apps.gradio_app import build_app

    path = tmp_path / "ramp.png"
    path.write_bytes(ramp16())
    with build_app(Explorer(None, display=32)) as demo:
        image_in = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "image-in")
    assert image_in.preprocess(ImageData(path=str(path), orig_name="ramp.png")) == str(path)  # not re-encoded


# damaged feature caches --------------------------------------------------------------------------------


def features_of(index: slice) -> Features:
    rows = torch.arange(index.start, index.stop, dtype=torch.float32)
    return Features(rows[:, None].repeat(1, 3), torch.sin(rows).view(-1, 1, 1, 1).repeat(1, 2, 4, 4))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("patches.npy", lambda data: data[: len(data) // 2]),  # truncated
        ("summary.npy", lambda data: bytes(len(data))),  # zeroed: header and all
        ("patches.npy", lambda data: data[:128] + bytes(len(data) - 128)),  # zeroed rows, header intact
        ("key.json", lambda data: json.dumps({"key": "k"}).encode()),  # no checksums (an older entry)
    ],
)
def test_a_damaged_cache_entry_is_named_deleted_and_rebuilt_to_the_same_values(tmp_path, name, damage):
    cache, calls = FeatureCache(tmp_path), []

    def compute(index: slice) -> Features:
        calls.append(index)
        return features_of(index)

    fresh = cache.build("k", {}, 10, compute, chunk=4)
    expected = [np.array(fresh.summary), np.array(fresh.patches)]
    del fresh
    path = tmp_path / "k" / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.warns(
        UserWarning, match=rf"damaged feature cache entry: {path if name != 'key.json' else ''}"
    ):
        rebuilt = cache.get_or_build("k", {}, 10, compute)
    assert len(calls) == 3 + 1  # built again (in one chunk of 64)
    np.testing.assert_array_equal(rebuilt.summary, expected[0])
    np.testing.assert_array_equal(rebuilt.patches, expected[1])
    cache.get_or_build("k", {}, 10, compute)
    assert len(calls) == 4  # the rebuilt entry is intact


class PixelTeacher:
    """A stand-in for StageTeachers: summary = the image's mean, patches = its first channel."""

    def __init__(self) -> None:
        self.teachers, self.device = {"t": None}, torch.device("cpu")

    def raw(self, name: str, images: torch.Tensor) -> Features:
        return Features(images.mean((1, 2, 3))[:, None].repeat(1, 2), images[:, :1])


def test_a_damaged_store_shard_is_named_when_read_and_rebuilt_by_the_next_build(tmp_path):
    teachers = [{"name": "t", "identity": "pixels", "summary_dim": 2, "patch_dim": 1}]
    manifest = StoreManifest("folder:x", count=6, side=4, grid=2, shard_size=4, teachers=teachers)
    views = [(torch.full((3, 4, 4), 40 * i, dtype=torch.uint8), True) for i in range(6)]
    manifest.save(tmp_path)
    write_shards(tmp_path, manifest, PixelTeacher(), views, 2, 0, print)
    ids = torch.arange(6)
    expected = FeatureStore(tmp_path).take("t", ids, "cpu")
    path = tmp_path / "shard-000001" / "t.patches.npy"
    data = path.read_bytes()
    path.write_bytes(data[:128] + bytes(len(data) - 128))  # zeroed values behind an intact header
    store = FeatureStore(tmp_path)  # headers and sizes are fine: opens
    damaged = f"{path} is damaged: its content differs from when it was saved"
    with pytest.raises(ValueError, match=f"{damaged}: delete {path.parent} and run"):
        store.take("t", ids, "cpu")
    lines = []
    write_shards(tmp_path, manifest, PixelTeacher(), views, 2, 0, lines.append)
    assert lines[0] == f"{damaged}: rebuilding shard-000001"
    rebuilt = FeatureStore(tmp_path).take("t", ids, "cpu")
    assert torch.equal(rebuilt.patches, expected.patches) and torch.equal(rebuilt.summary, expected.summary)


# the app's encoder cache --------------------------------------------------------------------------------


class FakeEncoder(nn.Module):
    """An 'encoder' of `floats` float32 parameters whose features are its image's mean."""

    def __init__(self, floats: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(floats))
        self.resolution = None

    def forward(
        self, images: torch.Tensor, with_experts: bool = False, keep_aspect: bool = False
    ) -> torch.Tensor:
        return images.mean()


def sized_builder(sizes: dict[str, int], built: list[str]):
    def build(spec: str, resolution: None, **kwargs: object) -> FakeEncoder:
        built.append(spec)
        if spec not in sizes:
            raise KeyError(f"no model named {spec}")
        return FakeEncoder(sizes[spec])

    return build


def test_built_encoders_are_bounded_by_count_and_memory_least_recent_first_with_their_features():
    built = []
    floats = {"a": 1, "b": 1, "c": 512, "c2": 512, "d": 1, "e": 1, "huge": 4096}
    store = EncoderCache(build=sized_builder(floats, built), max_encoders=3, max_encoder_bytes=3000)
    key = store.add_image(torch.rand(3, 8, 8))
    for spec in ("a", "b", "c"):
        store.features(key, spec, 8)
    assert list(store.encoders) == ["a", "b", "c"]  # 4 + 4 + 2048 bytes
    store.encoder("a")  # now the most recently used
    store.encoder("d")
    assert list(store.encoders) == ["c", "a", "d"]  # by count: b dropped, with its features
    assert [entry[1] for entry in store.cache] == ["a", "c"]
    passes = store.forward_passes
    store.features(key, "c", 8)  # cached features: no forward pass, but the encoder is in use
    assert store.forward_passes == passes and list(store.encoders) == ["a", "d", "c"]
    store.encoder("e")
    assert list(store.encoders) == ["d", "c", "e"] and [entry[1] for entry in store.cache] == ["c"]
    store.encoder("c2")  # by memory: 2 x 2048 bytes do not fit in 3000
    assert list(store.encoders) == ["e", "c2"] and list(store.cache) == []
    store.features(key, "c", 8)  # dropped, so built and computed again
    assert built.count("c") == 2 and store.forward_passes == passes + 1
    assert list(store.encoders) == ["c"]
    store.encoder("huge")  # 16 kB alone: kept, every other dropped
    assert list(store.encoders) == ["huge"] and list(store.cache) == []
    with pytest.raises(ValueError, match="cannot load encoder 'nameless': no model named nameless"):
        store.encoder("nameless")
    assert list(store.slots) == ["huge"]  # a failed build leaves nothing behind


def test_a_slow_build_stalls_neither_other_encoders_nor_repeats_for_its_own_spec():
    release, built = threading.Event(), []

    def build(spec: str, resolution: None, **kwargs: object) -> FakeEncoder:
        built.append(spec)
        if spec == "slow":
            assert release.wait(10)
        return FakeEncoder(1)

    store = EncoderCache(build=build, wait_s=10)
    key = store.add_image(torch.full((3, 8, 8), 0.25))
    slow_results, fast_results = [], []
    slow = [threading.Thread(target=lambda: slow_results.append(store.encoder("slow"))) for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.05)
    fast = threading.Thread(target=lambda: fast_results.append(store.features(key, "fast", 8)))
    fast.start()
    fast.join(timeout=5)
    assert not fast.is_alive() and float(fast_results[0]) == 0.25  # while "slow" is still building
    store.wait_s = 0.2
    with pytest.raises(ValueError, match=r"encoder 'slow' is busy with another request for over 0.2 s"):
        store.encoder("slow")
    release.set()
    for thread in slow:
        thread.join(timeout=5)
    assert built.count("slow") == 1 and slow_results[0] is slow_results[1] is store.encoder("slow")
