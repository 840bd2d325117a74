"""The on-disk teacher-feature store of a streamed corpus: contents, size, budget, resume, integrity."""

from __future__ import annotations

import io
import shutil
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.config import RunConfig, load_config
from distill.data.stream import FolderIndex
from distill.targets import store_write
from distill.targets.store import FeatureStore
from distill.targets.store_write import build_store, gib, projected_bytes, store_teachers

CONFIG = """
teachers:
  - {name: "timm:convnext_atto.d2_in1k", weights: random}
  - {name: "timm:vit_tiny_patch16_224", weights: random, resolution: 64}
proxy: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 1, num_heads: 2}}
student: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 1, num_heads: 2}}
data: {source: "folder:%s", stream: true, workers: 0}
stages:
  proxy: {steps: 1, batch_size: 4, lr: 1.0e-3}
"""
SIDE, GRID, SHARD, BATCH = 64, 2, 8, 4  # at 64 px: convnext 2x2 grid, ViT (64 px) 4x4, pooled to 2x2
CORRUPT = 11  # `010b.jpg` sorts after `010.jpg`


def make_images(root: Path, count: int = 20) -> None:
    """`count` smooth random JPEGs of 48-64 px sides, and one file that is not an image."""
    root.mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        small = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        small.resize((48 + i % 17, 64 - i % 13), Image.Resampling.BICUBIC).save(buffer, "JPEG")
        (root / f"{i:03d}.jpg").write_bytes(buffer.getvalue())
    (root / "010b.jpg").write_bytes(b"not a jpeg")


def make_config(tmp: Path) -> RunConfig:
    path = tmp / "c.yaml"
    path.write_text(textwrap.dedent(CONFIG % (tmp / "images")))
    return load_config(path)


def build(config: RunConfig, out: Path, lines: list[str] | None = None, **kwargs) -> None:
    settings = {"grid": GRID, "budget_gib": 1.0, "shard_size": SHARD, "batch_size": BATCH, "workers": 0}
    log = print if lines is None else lines.append
    build_store(config, out, SIDE, **(settings | kwargs), log=log)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunConfig, Path, list[str]]:
    """A complete store of 21 samples (one undecodable) in 3 shards, and the build's log."""
    tmp = tmp_path_factory.mktemp("store")
    make_images(tmp / "images")
    config, lines = make_config(tmp), []
    build(config, tmp / "store", lines, workers=1)
    return config, tmp / "store", lines


def arrays(store: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(store)): np.load(p) for p in sorted(store.glob("shard-*/*.npy"))}


def test_store_holds_the_pooled_features_of_the_centred_views(built):
    config, out, _ = built
    store = FeatureStore(out)
    assert (store.count, store.side, store.grid) == (21, SIDE, GRID)
    assert store.dims == {"timm:convnext_atto.d2_in1k": (320, 320), "timm:vit_tiny_patch16_224": (192, 192)}
    ids = torch.tensor([17, 0, 9, 20, CORRUPT, 3])
    views = store_write.CentredViews(FolderIndex(out.parent / "images"), SIDE)
    images = torch.stack([views[i][0] for i in ids]).float().div(255)
    teachers = store_teachers(config, torch.device("cpu"))
    assert store.valid(ids).tolist() == [i != CORRUPT for i in ids.tolist()]
    for name in store.teachers:
        expected = store_write.pooled(teachers.raw(name, images), GRID)
        got = store.take(name, ids, torch.device("cpu"))
        assert got.summary.dtype == torch.float32
        assert got.patches.shape == (6, store.dims[name][1], GRID, GRID)
        keep = ids != CORRUPT
        torch.testing.assert_close(got.summary[keep], expected.summary[keep], rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(got.patches[keep], expected.patches[keep], rtol=2e-3, atol=2e-3)
        assert not got.summary[~keep].any() and not got.patches[~keep].any()


def test_the_printed_projected_size_is_what_the_arrays_take(built):
    _, out, lines = built
    dims = FeatureStore(out).dims
    size = projected_bytes(21, dims, GRID)
    assert f"projected store size: {gib(size)}" in lines
    files = [p for p in out.glob("shard-*/*.npy") if p.name != "valid.npy"]
    assert len(files) == 3 * 2 * 2
    assert 0 < sum(p.stat().st_size for p in files) - size <= 128 * len(files)  # the npy headers
    assert "1 image(s) failed to decode" in lines[-1]


def test_refusals_write_nothing(tmp_path, built):
    config = built[0]
    with pytest.raises(ValueError, match=r"exceeds the budget of 1e-06 GiB \(--budget-gb\)"):
        build(config, tmp_path / "a", budget_gib=1e-6)
    with pytest.raises(ValueError, match="gives a 2x2 patch grid at side 64, below --grid 3"):
        build(config, tmp_path / "a", grid=3)
    with pytest.raises(ValueError, match="folder:<path> or shards:<glob>"):
        build(replace(config, data=replace(config.data, source="scenes")), tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_another_store_in_the_folder_is_refused(built):
    config, out, _ = built
    with pytest.raises(ValueError, match="holds a store of another shard_size"):
        build(config, out, shard_size=4)


def test_an_interrupted_build_resumes_to_the_same_arrays(tmp_path, monkeypatch, built):
    config, whole, _ = built
    original, calls = store_write.pooled, []

    def failing(features, grid):
        calls.append(1)
        if len(calls) == 6:  # shard 1, second batch (2 teachers x 2 batches per shard)
            raise KeyboardInterrupt
        return original(features, grid)

    monkeypatch.setattr(store_write, "pooled", failing)
    with pytest.raises(KeyboardInterrupt):
        build(config, tmp_path / "store")
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["shard-000000", "store.json"]
    with pytest.raises(ValueError, match=r"incomplete: 1 of 3 shards \(run eupe cache build again\)"):
        FeatureStore(tmp_path / "store")
    monkeypatch.setattr(store_write, "pooled", original)
    lines = []
    build(config, tmp_path / "store", lines)
    assert "resumed: 1 of 3 shards done" in lines
    resumed, expected = arrays(tmp_path / "store"), arrays(whole)
    assert resumed.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(resumed[name], array, err_msg=name)


def test_a_truncated_shard_file_is_named(tmp_path, built):
    out = tmp_path / "store"
    shutil.copytree(built[1], out)
    damaged = out / "shard-000001" / "timm_vit_tiny_patch16_224.patches.npy"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{damaged} is .* truncated .*: delete {damaged.parent} and run"):
        FeatureStore(out)
    with pytest.raises(ValueError, match="no feature store in"):
        FeatureStore(tmp_path)


def test_a_store_of_other_files_is_refused_before_the_run_folder_is_written(tmp_path, built):
    from distill.pipeline import prepare_data, run_stages
    from distill.targets.store import stage_store

    out = built[1]
    config = load_config(out.parent / "c.yaml", [f"data.store={out}", f"stages.proxy.resolutions=[{SIDE}]"])
    images = Path(config.data.source.removeprefix("folder:"))
    assert stage_store(config, "proxy", prepare_data(config, ["proxy"])) is not None  # as built
    refused = "does not match the files of .* now \\(renamed, added, removed or resized since it was built\\)"
    renamed, added = (images / "003.jpg", images / "zz.jpg"), (images / "001.jpg", images / "999.jpg")
    for (source, target), move in ((renamed, Path.rename), (added, shutil.copy)):
        move(source, target)  # renamed: the ids after it would take other images' targets; or one more image
        try:
            with pytest.raises(ValueError, match=refused):
                run_stages(config, tmp_path / "run", ["proxy"])
        finally:
            target.rename(source) if move is Path.rename else target.unlink()
        assert not (tmp_path / "run").exists()
