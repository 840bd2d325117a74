"""Synthetic images with natural statistics: dead leaves (occlusion edges at every scale) and 1/f noise."""

import torch

from distill.data.natural import dead_leaves, natural_noise
from distill.data.views import build_views


def radial_spectrum_slope(images: torch.Tensor) -> float:
    """The slope of log amplitude against log frequency, averaged over images and channels."""
    side = images.shape[-1]
    amplitude = torch.fft.fft2(images - images.mean((-2, -1), keepdim=True)).abs().mean((0, 1))
    freqs = torch.fft.fftfreq(side)
    radius = (freqs[:, None] ** 2 + freqs[None, :] ** 2).sqrt()
    band = (radius > 2 / side) & (radius < 0.25)
    x, y = radius[band].log(), amplitude[band].log()
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def test_both_are_deterministic_images_in_range():
    for make in (dead_leaves, natural_noise):
        images = make(4, 48, seed=5)
        assert images.shape == (4, 3, 48, 48) and images.min() >= 0 and images.max() <= 1
        assert torch.equal(images, make(4, 48, seed=5)) and not torch.equal(images, make(4, 48, seed=6))
        assert images.std((1, 2, 3)).min() > 0.05  # no flat image


def test_spectra_fall_as_a_power_of_frequency_like_photos():
    # natural images: amplitude ~ 1/f^a with a near 1-2; white noise would give a slope of 0
    assert -2.6 < radial_spectrum_slope(natural_noise(8, 64, seed=0)) < -1.4
    assert -2.6 < radial_spectrum_slope(dead_leaves(8, 64, seed=0)) < -0.8


def test_dead_leaves_hold_many_occluding_regions():
    image = dead_leaves(1, 64, seed=1)[0]
    jumps = (image[:, 1:] - image[:, :-1]).abs().amax(0)  # strong vertical steps: region boundaries
    assert (jumps > 0.1).float().mean() > 0.02
    colours = {tuple(c) for c in (image * 8).round().reshape(3, -1).T.tolist()}
    assert len(colours) > 20


def test_mixtures_take_them_by_name():
    views = build_views("mixed", 12, 32, seed=0, mix={"leaves": 0.5, "noise": 0.5})
    assert views.shape == (12, 3, 32, 32) and views.dtype == torch.uint8
