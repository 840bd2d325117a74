"""Feature comparison: cosine similarity to a query patch, agreement maps, CKA, UMAP and figures."""

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from workbench.eval.similarity import (
    agreement_map,
    agreement_score,
    cka_matrix,
    cosine_similarity_map,
    linear_cka,
    patch_rows_for_cka,
    query_patch,
    umap_embedding,
)
from workbench.viz.comparison_figures import agreement_figure, similarity_figure, umap_figure


def test_linear_cka_identity_rotation_scaling_and_independence():
    torch.manual_seed(0)
    x = torch.randn(300, 12) @ torch.randn(12, 12)
    rotation, _ = torch.linalg.qr(torch.randn(12, 12))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 7.5 * x @ rotation + 3.0) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, x[:, :6]) < 0.99  # a projection is not the same representation
    assert linear_cka(torch.randn(2000, 5), torch.randn(2000, 5)) < 0.05
    a = torch.randn(200, 4)
    b = a @ torch.randn(4, 4) + 0.01 * torch.randn(200, 4)  # a non-orthogonal linear map
    assert 0.0 < linear_cka(a, b) < 1.0
    with pytest.raises(ValueError, match="same N"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(10, 3), torch.randn(10, 3))


def test_cka_matrix_is_symmetric_with_unit_diagonal():
    torch.manual_seed(0)
    base = torch.randn(100, 8)
    features = {"a": base, "b": base @ torch.randn(8, 16), "c": torch.randn(100, 3)}
    names, matrix = cka_matrix(features)
    assert names == ["a", "b", "c"] and matrix.shape == (3, 3)
    assert torch.equal(matrix, matrix.T) and torch.equal(
        matrix.diagonal(), torch.ones(3, dtype=torch.float64)
    )
    assert matrix[0, 1] == pytest.approx(linear_cka(features["a"], features["b"]))
    assert matrix[0, 1] > matrix[0, 2]  # a linear map of `a` is closer to it than unrelated noise


def test_patch_rows_for_cka_resizes_to_a_common_grid():
    torch.manual_seed(0)
    fine = torch.randn(2, 4, 8, 8)
    coarse = torch.nn.functional.avg_pool2d(fine, 2)  # the same features at half resolution
    rows = patch_rows_for_cka({"fine": fine, "coarse": coarse, "wide": torch.randn(2, 6, 4, 4)})
    assert {name: tuple(r.shape) for name, r in rows.items()} == {
        "fine": (32, 4),
        "coarse": (32, 4),
        "wide": (32, 6),
    }
    torch.testing.assert_close(rows["fine"], rows["coarse"])  # area shrink of 8x8 == 2x2 average
    up = patch_rows_for_cka({"coarse": coarse}, size=(8, 8))["coarse"]
    assert up.shape == (2 * 64, 4)
    with pytest.raises(ValueError, match="same number of images"):
        patch_rows_for_cka({"a": torch.randn(1, 4, 4, 4), "b": torch.randn(2, 4, 4, 4)})


def test_query_patch_maps_points_and_corners():
    assert query_patch((0.0, 0.0), (4, 6)) == (0, 0)
    assert query_patch((1.0, 1.0), (4, 6)) == (3, 5)
    assert query_patch((0.5, 0.1), (4, 6)) == (0, 3)  # x picks the column, y the row
    with pytest.raises(ValueError, match="query"):
        query_patch((1.2, 0.5), (4, 4))


def test_cosine_similarity_map_is_one_at_the_query_patch():
    torch.manual_seed(0)
    patches = torch.randn(2, 16, 5, 7)
    patches[1, :, 0, 0] = -2.0 * patches[1, :, 4, 6]
    for query, (row, col) in [((0.0, 0.0), (0, 0)), ((1.0, 1.0), (4, 6)), ((0.3, 0.7), (3, 2))]:
        sim = cosine_similarity_map(patches, query)
        assert sim.shape == (2, 5, 7) and sim.min() >= -1 and sim.max() <= 1
        assert sim[:, row, col].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    sim = cosine_similarity_map(patches[1], (1.0, 1.0))  # [D, h, w] is a batch of one
    assert sim.shape == (1, 5, 7)
    assert sim[0, 0, 0] == pytest.approx(-1.0, abs=1e-6)  # the opposite direction of the query patch
    patches[0, :, 2, 2] = 0.0
    assert torch.equal(cosine_similarity_map(patches[0], (0.4, 0.5)), torch.zeros(1, 5, 7))  # zero query


def test_agreement_map_identical_and_different_grids():
    torch.manual_seed(0)
    expert = torch.randn(2, 8, 6, 6)
    same = agreement_map(expert, expert)
    assert same.shape == (2, 6, 6)
    torch.testing.assert_close(same, torch.ones(2, 6, 6))
    assert agreement_score(expert, -expert) == pytest.approx(-1.0, abs=1e-6)
    coarse = torch.randn(2, 8, 3, 3)
    assert agreement_map(coarse, expert).shape == (2, 6, 6)  # upsampled to the larger grid
    smooth = torch.nn.functional.interpolate(coarse, size=(6, 6), mode="bicubic", align_corners=False)
    assert agreement_score(coarse, smooth) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="share batch and feature"):
        agreement_map(torch.randn(2, 4, 3, 3), expert)


def test_umap_embedding_is_finite_and_deterministic():
    rng = np.random.default_rng(0)
    vectors = np.concatenate([rng.normal(0, 1, (30, 8)), rng.normal(8, 1, (30, 8))]).astype(np.float32)
    first = umap_embedding(vectors, seed=3)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, umap_embedding(torch.from_numpy(vectors), seed=3))
    centre_a, centre_b = first[:30].mean(0), first[30:].mean(0)
    spread = max(first[:30].std(0).max(), first[30:].std(0).max())
    assert np.linalg.norm(centre_a - centre_b) > 3 * spread  # the two clusters stay apart
    assert umap_embedding(vectors[:4]).shape == (4, 2)  # n_neighbors clamped to N - 1
    with pytest.raises(ValueError, match="N >= 3"):
        umap_embedding(vectors[:2])


def test_figures_have_one_panel_per_encoder():
    torch.manual_seed(0)
    labels = np.array([0, 1, 2, 1])
    fig = umap_figure({"a": np.zeros((4, 2)), "b": np.ones((4, 2))}, labels, ["x", "y", "z"], "umap")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["x", "y", "z"]
    with pytest.raises(ValueError, match="class_names"):
        umap_figure({"a": np.zeros((4, 2))}, np.array([0, 1, 2, 3]), ["x", "y", "z"], "umap")
    image = torch.rand(3, 32, 32)
    fig = similarity_figure(image, {"a": torch.randn(8, 4, 4), "b": torch.randn(5, 2, 2)}, (0.5, 0.5))
    assert len(fig.axes) == 3 + 1  # input, two encoders, colour bar
    expert = torch.randn(6, 4, 4)
    fig = agreement_figure(image, {"e": (expert, expert)})
    assert fig.axes[1].get_title() == "e: 1.00"
    fig.canvas.draw()  # renders with the Agg canvas
