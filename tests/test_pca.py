"""Robust PCA colouring of patch features."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

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
    assert abs(float(basis.components[0].float() @ direction)) > 0.99
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
    torch.testing.assert_close(joint.mean, rows.double().mean(0))
    assert abs(float(joint.components[0].float() @ direction)) > 0.99
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


def clusters_with_outliers(outliers: int, side: int = 12, dim: int = 16) -> tuple[Tensor, Tensor]:
    """A grid of four tight clusters of patches (labels [side*side], row-major) in the first half of the
    feature dimensions, and `outliers` huge patches (labelled -1) in the other half, as a ViT's high-norm
    tokens are."""
    generator = torch.Generator().manual_seed(0)
    centres = torch.cat([2 * torch.randn(4, dim // 2, generator=generator), torch.zeros(4, dim // 2)], 1)
    labels = torch.arange(side * side) % 4
    rows = centres[labels] + 0.05 * torch.randn(side * side, dim, generator=generator)
    rows[:outliers, dim // 2 :] = 1e4 * torch.randn(outliers, dim // 2, generator=generator)
    labels[:outliers] = -1
    return rows.T.reshape(1, dim, side, side), labels


@pytest.mark.parametrize("outliers", [1, 3])
def test_outlier_patches_do_not_take_the_colours_from_the_rest(outliers):
    grid, labels = clusters_with_outliers(outliers)
    colours = pca_rgb(grid)[0].flatten(1).T  # [patches, 3]
    means = torch.stack([colours[labels == k].mean(0) for k in range(4)])
    spread = max(float(colours[labels == k].std(0).max()) for k in range(4))
    apart = torch.cdist(means, means)[~torch.eye(4, dtype=torch.bool)]
    assert float(apart.min()) > 0.3 and spread < 0.1  # four distinct colours, each cluster one colour


FEATURES = "torch.randn(2, 24, 7, 9, generator=torch.Generator().manual_seed(3))"


def test_the_same_features_give_bit_identical_colours_in_every_call_and_process():
    patches = eval(FEATURES)
    colours = [PCABasis.fit(patches).to_rgb(patches) for _ in range(3)]
    assert all(torch.equal(colours[0], c) for c in colours[1:])
    code = (
        "import hashlib, torch; from workbench.viz.pca import PCABasis\n"
        f"patches = {FEATURES}\n"
        "print(hashlib.sha1(PCABasis.fit(patches).to_rgb(patches).numpy().tobytes()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"PYTHONPATH": str(root)}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == hashlib.sha1(colours[0].numpy().tobytes()).hexdigest()


def test_negated_or_mirrored_features_give_the_same_colours():
    patches = eval(FEATURES)
    colours = PCABasis.fit(patches).to_rgb(patches)
    assert torch.equal(PCABasis.fit(-patches).to_rgb(-patches), colours)  # signs follow the data
    mirrored = patches.flip(-1)  # the same patches in another order
    torch.testing.assert_close(PCABasis.fit(mirrored).to_rgb(mirrored), colours.flip(-1), rtol=0, atol=1e-6)
