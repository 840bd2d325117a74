"""Tests of the procedural scene generator (CPU only, small resolutions)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distill.data.glyphs import GLYPH_CHARS, glyph_atlas
from distill.data.scenes import (
    SCENE_CLASSES,
    SEGMENT_CLASSES,
    SIGN_CLASS,
    TEXT_CLASS,
    SceneBatch,
    SceneGenerator,
)
from workbench.bench.scenes import bench_scenes

RES = (48, 80)  # non-square on purpose


@pytest.fixture(scope="module")
def gen() -> SceneGenerator:
    return SceneGenerator(RES, seed=7)


@pytest.fixture(scope="module")
def layered(gen: SceneGenerator) -> SceneBatch:
    return gen.batch(0, 48, return_layers=True)


@pytest.fixture(scope="module")
def many() -> SceneBatch:
    return SceneGenerator(32, seed=11).batch(0, 720)


def test_class_names() -> None:
    assert len(SCENE_CLASSES) >= 10 and len(set(SCENE_CLASSES)) == len(SCENE_CLASSES)
    assert len(SEGMENT_CLASSES) >= 8 and len(set(SEGMENT_CLASSES)) == len(SEGMENT_CLASSES)
    assert SEGMENT_CLASSES[0] == "background" and SEGMENT_CLASSES[TEXT_CLASS] == "text"


def test_shapes_dtypes_ranges(layered: SceneBatch) -> None:
    b, (h, w) = len(layered), RES
    assert layered.images.shape == (b, 3, h, w) and layered.images.dtype == torch.float32
    assert layered.images.min() >= 0.0 and layered.images.max() <= 1.0
    assert layered.scene_class.shape == (b,) and layered.scene_class.dtype == torch.int64
    assert layered.scene_class.min() >= 0 and layered.scene_class.max() < len(SCENE_CLASSES)
    for name, dtype in (("segmentation", torch.int64), ("depth", torch.float32), ("edges", torch.bool)):
        t = getattr(layered, name)
        assert t.shape == (b, h, w) and t.dtype == dtype, name
    assert layered.text.shape == (b, h, w) and layered.text.dtype == torch.bool
    assert layered.segmentation.min() >= 0 and layered.segmentation.max() < len(SEGMENT_CLASSES)
    assert torch.isfinite(layered.depth).all() and layered.depth.min() > 0
    assert layered.images.std() > 0.05  # not blank


def test_same_seed_same_tensors_different_seed_differs() -> None:
    a = SceneGenerator(RES, seed=3).batch(5, 6)
    b = SceneGenerator(RES, seed=3).batch(5, 6)
    c = SceneGenerator(RES, seed=4).batch(5, 6)
    for name in ("images", "scene_class", "segmentation", "depth", "edges", "text"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.images, c.images)
    assert not torch.equal(a.segmentation, c.segmentation)


def test_sample_independent_of_batch_composition(gen: SceneGenerator, layered: SceneBatch) -> None:
    for start, size in ((0, 1), (5, 3), (17, 9)):
        part = gen.batch(start, size)
        for name in ("images", "scene_class", "segmentation", "depth", "edges", "text", "instances"):
            assert torch.equal(getattr(part, name), getattr(layered, name)[start : start + size]), name


def test_chunked_rendering_matches(layered: SceneBatch) -> None:
    gen = SceneGenerator(RES, seed=7)
    gen.chunk_pixels = RES[0] * RES[1] * 5  # 12 samples -> chunks of 5, 5, 2
    part = gen.batch(0, 12, return_layers=True)
    for name in ("images", "segmentation", "depth", "edges", "text", "instances", "layer_depth"):
        assert torch.equal(getattr(part, name), getattr(layered, name)[:12]), name


def test_nearest_layer_owns_label_and_depth(gen: SceneGenerator, layered: SceneBatch) -> None:
    depths = layered.layer_depth
    assert depths.shape == (len(layered), gen.max_layers + 1, *RES)
    owner = depths.argmin(1)
    torch.testing.assert_close(layered.depth, depths.min(1).values, rtol=0, atol=0)
    owner_class = torch.gather(layered.layer_class, 1, owner.flatten(1)).view_as(owner)
    text = layered.text
    assert torch.equal(layered.segmentation[~text], owner_class[~text])
    assert (owner_class[text] == SIGN_CLASS).all() and (layered.segmentation[text] == TEXT_CLASS).all()
    assert torch.equal(layered.instances, owner + text.long() * (gen.max_layers + 1))
    # Background is farthest, signs nearest, and text shares its sign's depth.
    bg = depths[:, 0]
    covered = torch.isfinite(depths[:, 1:])
    assert (depths[:, 1:][covered] < bg.unsqueeze(1).expand_as(covered)[covered]).all()
    is_sign = layered.layer_class[:, 1:] == SIGN_CLASS
    sign_d = depths[:, 1:][(covered & is_sign[..., None, None])]
    obj_d = depths[:, 1:][(covered & ~is_sign[..., None, None])]
    assert sign_d.max() <= obj_d.min()
    assert (layered.segmentation > 0).float().mean() > 0.05  # objects are present


def _boundary(inst: torch.Tensor) -> torch.Tensor:
    """Independent 4-neighbour boundary computation via padding."""
    p = F.pad(inst[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0]
    c = p[:, 1:-1, 1:-1]
    return (c != p[:, :-2, 1:-1]) | (c != p[:, 2:, 1:-1]) | (c != p[:, 1:-1, :-2]) | (c != p[:, 1:-1, 2:])


def test_edges_are_instance_and_segment_boundaries(layered: SceneBatch) -> None:
    assert torch.equal(layered.edges, _boundary(layered.instances))
    seg_boundary = _boundary(layered.segmentation)
    assert not (seg_boundary & ~layered.edges).any()  # every segment boundary is an edge
    assert layered.edges.any(dim=(1, 2)).float().mean() > 0.9


def test_text_mask_lies_in_text_segment_and_is_legible() -> None:
    gen = SceneGenerator(96, seed=5)
    batch = gen.batch(0, 32)
    text, seg, inst = batch.text, batch.segmentation, batch.instances
    assert not (text & (seg != TEXT_CLASS)).any()
    has_sign = (seg == SIGN_CLASS).flatten(1).any(1)
    has_text = text.flatten(1).any(1)
    assert torch.equal(has_text, has_sign)  # signs are frontmost, so their text shows
    assert 0 < has_text.sum() < len(batch)
    gray = batch.images.mean(1)
    glyph_offset = gen.max_layers + 1
    for i in torch.nonzero(has_text).flatten().tolist():
        for k in torch.unique(inst[i][text[i]]).tolist():
            glyphs, plate = inst[i] == k, inst[i] == k - glyph_offset
            if glyphs.sum() >= 5:
                contrast = (gray[i][glyphs].mean() - gray[i][plate].mean()).abs()
                assert contrast > 0.25, f"sample {i}: text/plate contrast {contrast:.2f}"


def test_text_probability_override() -> None:
    none = SceneGenerator(64, seed=1, text_probability=0.0).batch(0, 12)
    every = SceneGenerator(64, seed=1, text_probability=1.0).batch(0, 12)
    assert not none.text.any() and not (none.segmentation >= SIGN_CLASS).any()
    assert every.text.flatten(1).any(1).all()


def test_all_classes_appear(many: SceneBatch) -> None:
    counts = torch.bincount(many.scene_class, minlength=len(SCENE_CLASSES))
    assert (counts > 0).all(), counts
    seg_counts = torch.bincount(many.segmentation.flatten(), minlength=len(SEGMENT_CLASSES))
    assert (seg_counts > 0).all(), seg_counts


def _features(images: torch.Tensor) -> torch.Tensor:
    small = F.adaptive_avg_pool2d(images, 4).flatten(1)
    q = (images.clamp(0, 0.999) * 4).long()
    hist = F.one_hot((q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1), 64).float().mean(1)
    return torch.cat([small, 4 * hist], 1)


def test_scene_classes_learnable_from_pixels(many: SceneBatch) -> None:
    # Nearest class mean on 4x4 thumbnails + a 64-bin colour histogram; measured ~0.85-0.9 on
    # 32 px images (chance 1/12 ~ 0.08), so 0.5 leaves a wide margin.
    feats = _features(many.images)
    labels = many.scene_class
    n_train = 480
    mu, sd = feats[:n_train].mean(0), feats[:n_train].std(0) + 1e-3
    feats = (feats - mu) / sd
    means = torch.stack([feats[:n_train][labels[:n_train] == c].mean(0) for c in range(len(SCENE_CLASSES))])
    pred = torch.cdist(feats[n_train:], means).argmin(1)
    accuracy = (pred == labels[n_train:]).float().mean().item()
    assert accuracy > 0.5, accuracy


def test_same_scene_at_every_resolution() -> None:
    lo = SceneGenerator(64, seed=2).batch(0, 8)
    hi = SceneGenerator(128, seed=2).batch(0, 8)
    assert torch.equal(lo.scene_class, hi.scene_class)
    agree = (hi.segmentation[:, ::2, ::2] == lo.segmentation).float().mean()
    assert agree > 0.9, agree


def test_to_device_keeps_values(layered: SceneBatch) -> None:
    moved = layered.to("cpu")
    assert torch.equal(moved.images, layered.images) and torch.equal(moved.layer_depth, layered.layer_depth)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resolution": 16}, "resolution too small"),
        ({"resolution": (64, 20)}, "resolution too small"),
        ({"resolution": (64,)}, "resolution must be"),
        ({"resolution": 64.0}, "resolution must be"),
        ({"seed": -1}, "seed"),
        ({"max_layers": 2}, "max_layers"),
        ({"text_probability": 1.5}, "text_probability"),
    ],
)
def test_invalid_constructor_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SceneGenerator(**kwargs)


@pytest.mark.parametrize("start, size, match", [(0, 0, "size"), (0, -3, "size"), (-1, 4, "start")])
def test_invalid_batch_arguments(gen: SceneGenerator, start: int, size: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gen.batch(start, size)


def test_glyph_atlas_distinct_nonempty() -> None:
    atlas = glyph_atlas()
    bitmaps = atlas.bitmaps
    assert bitmaps.shape[0] == len(GLYPH_CHARS) and 0.3 < atlas.aspect < 1.2
    assert (bitmaps.flatten(1).max(1).values > 0.9).all()
    flat = bitmaps.flatten(1) > 0.5
    differ = (flat[:, None] != flat[None]).sum(-1) + torch.eye(len(flat), dtype=torch.long) * flat.shape[1]
    assert differ.min() > 30  # no two glyphs alike (O and Q differ least)


def test_benchmark_runs() -> None:
    assert bench_scenes(batch_size=2, resolution=32, device="cpu", iters=1) > 0
