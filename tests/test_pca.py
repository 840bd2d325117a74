"""Robust PCA colouring of patch features."""

import torch

from workbench.pca import PCABasis, pca_rgb


def test_same_basis_gives_identical_colours_across_images():
    torch.manual_seed(0)
    a, b = torch.randn(1, 16, 6, 6), torch.randn(1, 16, 6, 6)
    basis = PCABasis.fit(torch.cat([a, b]))
    both = basis.to_rgb(torch.cat([a, b]))
    assert torch.equal(basis.to_rgb(a), both[:1]) and torch.equal(basis.to_rgb(b), both[1:])
    assert both.shape == (2, 3, 6, 6) and both.min() >= 0 and both.max() <= 1


def test_first_component_follows_the_dominant_direction():
    torch.manual_seed(0)
    direction = torch.zeros(8)
    direction[3] = 1.0
    t = torch.linspace(-5, 5, 64)
    patches = (t[:, None] * direction + 0.01 * torch.randn(64, 8)).T.reshape(1, 8, 8, 8)
    basis = PCABasis.fit(patches)
    assert abs(float(basis.components[0] @ direction)) > 0.99
    colours = basis.to_rgb(patches)[0, 0].flatten()
    corr = torch.corrcoef(torch.stack([colours, t]))[0, 1]
    assert abs(corr) > 0.95  # the first colour channel tracks the position along the direction


def test_robust_range_ignores_outliers():
    torch.manual_seed(0)
    patches = torch.randn(1, 4, 10, 10)
    patches[0, :, 0, 0] = 1000.0  # one wild patch
    rgb = pca_rgb(patches)
    assert (rgb[0, :, 1:, :] > 0.02).float().mean() > 0.5  # the rest is not squashed to one colour


def test_skip_first_and_low_dimensional_features():
    torch.manual_seed(0)
    assert pca_rgb(torch.randn(2, 2, 4, 4)).shape == (2, 3, 4, 4)  # 2-d features still give RGB
    basis = PCABasis.fit(torch.randn(1, 12, 5, 5), skip_first=True)
    assert basis.components.shape == (3, 12)
