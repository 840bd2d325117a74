"""Robust PCA colouring of patch features."""

import pytest
import torch
from torch import Tensor

from workbench.viz.pca import PCABasis, foreground_mask, pca_rgb


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


def object_scene(
    batch: int = 2, dim: int = 8, side: int = 8, inner: slice = slice(2, 6)
) -> tuple[Tensor, Tensor]:
    """Patches with an object (one feature vector) framed by background (another), plus its true mask."""
    torch.manual_seed(0)
    truth = torch.zeros(batch, side, side, dtype=torch.bool)
    truth[:, inner, inner] = True
    background, foreground = torch.randn(dim), torch.randn(dim)
    patches = torch.where(truth[:, None], foreground[:, None, None], background[:, None, None])
    return patches + 0.05 * torch.randn(batch, dim, side, side), truth


def test_same_basis_colours_image_a_alone_as_in_a_batch_with_b():
    patches, mask = object_scene()
    basis = PCABasis.fit(patches, mask=mask)
    alone, batched = basis.to_rgb(patches[:1], mask=mask[:1]), basis.to_rgb(patches, mask=mask)
    assert torch.equal(alone, batched[:1])
    assert torch.all(batched[:, :, ~mask[0]] == 0)  # background painted black
    assert torch.all(batched.amax(1)[mask] > 0)


def test_joint_basis_across_two_encoders_of_the_same_dim():
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(6), dim=0)

    def along(side: int) -> Tensor:  # a grid of features spread along `direction`, plus a little noise
        n = side * side
        return (torch.linspace(-3, 3, n)[:, None] * direction + 0.01 * torch.randn(n, 6)).T.reshape(
            1, 6, side, side
        )

    first, second = along(4), along(6)
    joint = PCABasis.fit([first, second])  # different grids, one feature space
    rows = torch.cat([first.flatten(2)[0].T, second.flatten(2)[0].T])
    torch.testing.assert_close(joint.mean, rows.mean(0))
    assert abs(float(joint.components[0] @ direction)) > 0.99
    first[0, :, 1, 2] = second[0, :, 5, 0] = 2.0 * direction  # the same feature in both encoders' grids
    assert torch.equal(joint.to_rgb(first)[0, :, 1, 2], joint.to_rgb(second)[0, :, 5, 0])
    ends = joint.to_rgb(first)[0, 0]
    assert ends[0, 0] != ends[-1, -1]  # the two ends of the direction get different colours


def test_mask_fit_uses_only_foreground_rows():
    patches, mask = object_scene()
    patches[:, :, 0, 0] = 100.0  # a wild background patch must not move a foreground fit
    torch.manual_seed(1)
    masked = PCABasis.fit(patches, mask=mask)
    rows = patches.permute(0, 2, 3, 1)[mask]
    torch.manual_seed(1)
    direct = PCABasis.fit(rows.T.reshape(1, 8, -1, 1))  # the same rows as a grid of their own
    for got, expected in zip(vars(masked).values(), vars(direct).values(), strict=True):
        torch.testing.assert_close(got, expected)
    assert torch.dist(PCABasis.fit(patches).mean, masked.mean) > 1  # unmasked, background and outlier count
    with pytest.raises(ValueError, match="mask"):
        PCABasis.fit(patches, mask=mask[:1])
    with pytest.raises(ValueError, match="at least 4 patches"):
        PCABasis.fit(patches, mask=torch.zeros_like(mask))


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_foreground_mask_finds_the_framed_object_even_when_it_is_the_majority(sign):
    patches, truth = object_scene(inner=slice(1, 7))  # 36 of 64 patches: a majority, yet framed
    assert torch.equal(foreground_mask(sign * patches), truth)


def test_foreground_mask_threshold_keeps_a_shrinking_core():
    torch.manual_seed(0)
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    bump = 3.0 - ((rows - 4) ** 2 + (cols - 4) ** 2).sqrt()  # high in the centre, low at the border
    patches = bump * torch.randn(5, 1, 1) + 0.01 * torch.randn(5, 9, 9)
    loose, strict = foreground_mask(patches[None]), foreground_mask(patches[None], threshold=1.0)
    assert loose[0, 4, 4] and strict[0, 4, 4] and not loose[0, 0, 0]
    assert bool((strict <= loose).all()) and strict.sum() < loose.sum()


def test_foreground_mask_falls_back_to_the_minority_and_reuses_a_basis():
    torch.manual_seed(0)
    truth = torch.zeros(1, 2, 8, dtype=torch.bool)  # no inner patches: no spatial signal
    truth[0, :, 5:] = True
    patches = torch.where(truth[:, None], 1.0, -1.0) * torch.ones(1, 4, 1, 1) + 0.05 * torch.randn(1, 4, 2, 8)
    assert torch.equal(foreground_mask(patches), truth)
    assert torch.equal(foreground_mask(-patches), truth)
    scene, scene_truth = object_scene()
    basis = PCABasis.fit(scene)
    assert torch.equal(foreground_mask(scene[1:], basis=basis), scene_truth[1:])
    with pytest.raises(ValueError, match="skip_first=False"):
        foreground_mask(scene, basis=PCABasis.fit(scene, skip_first=True))
