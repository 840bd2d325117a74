"""Frozen-feature probes and their metrics, on synthetic features whose answers are known."""

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench.eval.metrics import (
    accuracy,
    binary_f_score,
    confusion_matrix,
    depth_metrics,
    mean_iou,
    mean_pearson,
)
from workbench.eval.probes.classify import knn_classify, linear_classify
from workbench.eval.probes.dense_head import (
    DenseProbe,
    evaluate_dense_probe,
    linear_binary_map,
    linear_depth,
    linear_segmentation,
    train_dense_probe,
)

FAST = {"steps": 100, "batch_size": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster and immune to oversubscribed shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_confusion_matrix_by_hand():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    target = torch.tensor([[0, 1, 2], [2, 2, 1]])
    assert accuracy(pred, target) == pytest.approx(4 / 6)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]])
    assert torch.equal(confusion_matrix(pred, target, 4), expected)


def test_mean_iou_by_hand():
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    target = torch.tensor([[0, 1, 2], [2, 2, 1]])
    # class 0: 1 / 2, class 1: 1 / 3, class 2: 2 / 3, class 3 absent from both -> skipped
    assert mean_iou(pred, target, 4) == pytest.approx(0.5)
    ignored = torch.tensor([[0, 1, 255], [2, 2, 1]])
    # pairs (0,0) (1,1) (2,2) (2,2) (1,0): class 0: 1/2, class 1: 1/2, class 2: 2/2
    assert mean_iou(pred, ignored, 4, ignore_index=255) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="target labels"):
        mean_iou(pred, ignored, 4)


def test_depth_metrics_by_hand():
    pred = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = torch.tensor([[1.0, 2.0, 4.0], [4.0, 4.0, 8.0]])
    # errors 0 0 -1 0 1 -2; relative 0 0 1/4 0 1/4 1/4; ratios 1 1 4/3 1 5/4 4/3 (5/4 is not < 1.25)
    m = depth_metrics(pred, target)
    assert m["rmse"] == pytest.approx(1.0)
    assert m["absrel"] == pytest.approx(0.125)
    assert m["delta1"] == pytest.approx(0.5)
    valid = torch.tensor([[True, True, False], [True, True, False]])
    m = depth_metrics(pred, target, valid)
    assert (m["rmse"], m["absrel"], m["delta1"]) == pytest.approx((0.5, 0.0625, 0.75))


def test_depth_metrics_guards():
    target = torch.tensor([[2.0, 0.0]])
    with pytest.raises(ValueError, match="> 0"):
        depth_metrics(torch.ones(1, 2), target)
    # an invalid zero target is fine; a negative prediction is clipped to a tiny positive depth
    m = depth_metrics(torch.tensor([[-1.0, 5.0]]), target, valid=target > 0)
    assert m["absrel"] == pytest.approx(1.0, abs=1e-5) and m["delta1"] == 0.0


def test_binary_f_score_perfect_and_by_hand():
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 3, :] = True
    perfect = binary_f_score(target.float(), target)
    assert perfect["f"] == pytest.approx(1.0) and perfect["precision"] == perfect["recall"] == 1.0

    prob = torch.tensor([[0.9, 0.8, 0.3, 0.1]])
    truth = torch.tensor([[1, 0, 1, 0]])
    # t = 0.5: predicted {0, 1}, P = 1/2, R = 1/2, F = 1/2
    # t = 0.2: predicted {0, 1, 2}, P = 2/3, R = 1, F = 0.8
    assert binary_f_score(prob, truth, thresholds=[0.5])["f"] == pytest.approx(0.5)
    best = binary_f_score(prob, truth, thresholds=[0.5, 0.2])
    assert best == pytest.approx({"f": 0.8, "precision": 2 / 3, "recall": 1.0, "threshold": 0.2})


def test_binary_f_score_tolerance_counts_a_shifted_edge():
    target = torch.zeros(1, 8, 8, dtype=torch.bool)
    target[0, :, 3] = True
    shifted = torch.roll(target, 1, dims=2).float()
    assert binary_f_score(shifted, target)["f"] == 0.0
    assert binary_f_score(shifted, target, tolerance=1)["f"] == pytest.approx(1.0)
    # two pixels away stays unmatched at tolerance 1
    assert binary_f_score(torch.roll(target, 2, dims=2).float(), target, tolerance=1)["f"] == 0.0
    with pytest.raises(ValueError, match="no positive"):
        binary_f_score(shifted, torch.zeros_like(target))


# ----------------------------------------------------------------------------- classification


def _clusters(n: int, dim: int, classes: int, seed: int, spread: float = 8.0):
    gen = torch.Generator().manual_seed(seed)
    centres = spread * torch.eye(classes, dim)
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, dim, generator=gen), y


def _random(n: int, dim: int, classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_knn_separable_clusters_and_chance():
    train_x, train_y = _clusters(200, 32, 4, seed=0)
    test_x, test_y = _clusters(200, 32, 4, seed=1)
    acc = knn_classify(train_x.half(), train_y, test_x, test_y, ks=(10, 20), chunk_size=64)
    assert set(acc) == {10, 20} and min(acc.values()) == 1.0
    rx, ry = _random(400, 32, 4, seed=2)
    chance = knn_classify(rx[:200], ry[:200], rx[200:], ry[200:])
    assert max(chance.values()) < 0.4  # chance is 0.25
    with pytest.raises(ValueError, match="every k"):
        knn_classify(train_x, train_y, test_x, test_y, ks=(201,))


def test_knn_temperature_weights_nearer_neighbours():
    # one close neighbour of class 1 against two farther ones of class 0: the weights decide the vote
    train_x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.6, 0.8]])
    train_y = torch.tensor([1, 0, 0])
    test_x, test_y = torch.tensor([[1.0, 0.1]]), torch.tensor([1])
    assert knn_classify(train_x, train_y, test_x, test_y, ks=(3,), temperature=0.07)[3] == 1.0
    assert knn_classify(train_x, train_y, test_x, test_y, ks=(3,), temperature=100.0)[3] == 0.0


def test_linear_classify_separable_chance_and_determinism():
    train_x, train_y = _clusters(300, 64, 5, seed=0)
    test_x, test_y = _clusters(200, 64, 5, seed=1)
    assert linear_classify(train_x, train_y, test_x, test_y) == 1.0
    rx, ry = _random(600, 64, 4, seed=3)
    first = linear_classify(rx[:400], ry[:400], rx[400:], ry[400:], seed=1)
    assert first < 0.4  # chance is 0.25
    assert linear_classify(rx[:400], ry[:400], rx[400:], ry[400:], seed=1) == first


# ----------------------------------------------------------------------------- dense probes


def _grid_labels(n: int, grid: int, classes: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n, grid, grid), generator=gen)


def _onehot_patches(labels: torch.Tensor, classes: int, dim: int, noise: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    signal = F.one_hot(labels, classes).permute(0, 3, 1, 2).float()
    extra = torch.zeros(labels.shape[0], dim - classes, *labels.shape[1:])
    return torch.cat([signal, extra], 1) + noise * torch.randn(
        labels.shape[0], dim, *labels.shape[1:], generator=gen
    )


def _upsample(labels: torch.Tensor, side: int) -> torch.Tensor:
    return F.interpolate(labels[:, None].float(), size=(side, side), mode="nearest")[:, 0].to(labels.dtype)


def test_linear_segmentation_high_on_informative_features_low_on_random():
    classes, side = 4, 32
    # classes drawn per 2x2 block of patches on an 8x8 grid, labels at 32x32 (4x4 pixels per patch)
    grids = [_upsample(_grid_labels(n, 4, classes, seed), 8) for n, seed in ((48, 0), (16, 1))]
    train_p = _onehot_patches(grids[0], classes, 12, 0.1, seed=2).half()
    test_p = _onehot_patches(grids[1], classes, 12, 0.1, seed=3)
    train_l, test_l = (_upsample(g, side) for g in grids)
    good = linear_segmentation(train_p, train_l, test_p, test_l, classes, loss_size=16, **FAST)
    assert good["miou"] > 0.9 and good["pixel_accuracy"] > 0.95
    noise = torch.randn(64, 12, 8, 8, generator=torch.Generator().manual_seed(4))
    bad = linear_segmentation(noise[:48], train_l, noise[48:], test_l, classes, **FAST)
    assert bad["miou"] < 0.35


def test_linear_depth_recovers_a_log_linear_depth():
    gen = torch.Generator().manual_seed(0)
    patches = torch.randn(64, 8, 8, 8, generator=gen)
    weights = torch.tensor([0.4, -0.3, 0.2, 0.0, 0.0, 0.1, 0.0, 0.0])
    log_depth = torch.einsum("ndhw,d->nhw", patches, weights) + 1.5  # depths about 0.7..32
    depth = F.interpolate(log_depth[:, None], size=(24, 24), mode="bilinear", align_corners=False)[:, 0].exp()
    m = linear_depth(patches[:48], depth[:48], patches[48:], depth[48:], steps=200, batch_size=16)
    assert m["absrel"] < 0.05 and m["delta1"] > 0.99
    assert m["rmse"] < 0.1 * depth[48:].mean().item()
    with pytest.raises(ValueError, match="> 0"):
        linear_depth(patches[:48], depth[:48] - 5, patches[48:], depth[48:], **FAST)


def test_linear_binary_map_finds_sparse_positives():
    grid_masks = _grid_labels(64, 8, 6, seed=0) == 0  # about 1 in 6 patches positive
    patches = _onehot_patches(grid_masks.long(), 2, 6, 0.2, seed=1)
    masks = _upsample(grid_masks, 32)
    m = linear_binary_map(patches[:48], masks[:48], patches[48:], masks[48:], tolerance=1, **FAST)
    assert m["f"] > 0.9 and 0 < m["threshold"] < 1
    assert set(m) == {"f", "precision", "recall", "threshold"}


def test_dense_probe_is_deterministic_and_round_trips_through_state_dict():
    classes = 3
    grid = _grid_labels(20, 4, classes, seed=0)
    patches, labels = _onehot_patches(grid, classes, 5, 0.5, seed=1), _upsample(grid, 16)
    a = train_dense_probe("segmentation", patches, labels, classes, steps=20, batch_size=8, seed=3)
    b = train_dense_probe("segmentation", patches, labels, classes, steps=20, batch_size=8, seed=3)
    c = train_dense_probe("segmentation", patches, labels, classes, steps=20, batch_size=8, seed=4)
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    assert evaluate_dense_probe(a, patches, labels) == evaluate_dense_probe(b, patches, labels)

    buffer = io.BytesIO()
    torch.save({"config": a.config, "state_dict": a.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    restored = DenseProbe(**saved["config"])
    restored.load_state_dict(saved["state_dict"])
    pred = restored.predict(patches, 16, batch_size=7)
    assert pred.shape == (20, 16, 16) and pred.dtype == torch.int64
    assert torch.equal(pred, a.predict(patches, (16, 16)))


def test_dense_probe_matches_batchnorm2d_and_conv2d_on_the_grid():
    probe = DenseProbe(6, "segmentation", 3)
    x = torch.randn(4, 6, 5, 7)
    for mode in (probe.train, probe.eval):  # batch statistics, then running statistics
        mode()
        torch.testing.assert_close(probe(x), probe.head(probe.norm(x)), atol=1e-5, rtol=1e-5)


def test_dense_probe_rejects_bad_input():
    patches, labels = torch.randn(4, 5, 4, 4), torch.zeros(4, 16, 16, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown dense probe task"):
        train_dense_probe("normals", patches, labels)
    with pytest.raises(ValueError, match="segmentation labels"):
        train_dense_probe("segmentation", patches, labels + 3, 3)
    with pytest.raises(ValueError, match="bool"):
        train_dense_probe("binary", patches, labels)
    with pytest.raises(ValueError, match="patches must be"):
        train_dense_probe("depth", patches[:3], labels.float() + 1)
    probe = DenseProbe(5, "depth")
    with pytest.raises(ValueError, match="patches must be"):
        probe.predict(torch.randn(2, 6, 4, 4), 16)
    assert math.isfinite(probe.predict(patches, 8).sum().item())


def test_mean_pearson_is_per_image_and_invariant_to_scale_and_shift():
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert mean_pearson(maps, 2 * maps + 5) == pytest.approx(1.0)
    assert mean_pearson(maps, -maps) == pytest.approx(-1.0)
    mixed = torch.stack([maps[0], -maps[1], torch.ones(8, 8)])  # +1, -1, and a constant image counts 0
    assert mean_pearson(maps, mixed) == pytest.approx(0.0, abs=1e-12)
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert abs(mean_pearson(torch.rand(3, 64, 64), noise)) < 0.05
    with pytest.raises(ValueError, match="differs"):
        mean_pearson(maps, maps[:2])
