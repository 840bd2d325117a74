"""Synthetic images with the statistics of natural ones, generated offline at any count.

- Dead leaves: opaque discs with power-law radii dropped on top of each other, so the image holds
  occlusion edges at every scale, as photos do (the size distribution of objects in natural images
  follows a power law, and dead-leaves images reproduce their 1/f spectrum and edge statistics).
- Spectral noise: random phases under a 1/f^a amplitude spectrum, per colour channel with correlated
  channels: natural images' second-order statistics without their edges.

Each leaf is filled with a smooth colour gradient plus a little spectral texture, so leaves are neither
flat nor all alike.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LEAVES = 500  # discs per image, the last drawn on top: enough to cover ~97% of the image
MIN_RADIUS, MAX_RADIUS = 0.02, 0.35  # as fractions of the image side
RADIUS_POWER = 3.0  # density of radius r proportional to r^-power (scale invariance)
SPECTRAL_EXPONENTS = (1.5, 2.5)  # range of the amplitude exponent a of 1/f^a noise


def spectral_noise(count: int, side: int, generator: torch.Generator, channels: int = 3) -> Tensor:
    """`count` images [count, channels, side, side] in [0, 1] of 1/f^a noise (a drawn per image), with
    correlated channels (a random colour mixing), each image scaled to mean 0.5 and 3 std to the edges."""
    freqs = torch.fft.fftfreq(side)
    radius = (freqs[:, None] ** 2 + freqs[None, :] ** 2).sqrt().clamp_min(1.0 / side)
    low, high = SPECTRAL_EXPONENTS
    exponent = low + (high - low) * torch.rand(count, 1, 1, 1, generator=generator)
    amplitude = radius[None, None] ** -exponent
    phase = torch.rand(count, channels, side, side, generator=generator) * 2 * math.pi
    noise = torch.fft.ifft2(amplitude * torch.polar(torch.ones_like(phase), phase)).real
    mixing = torch.eye(channels) + 0.8 * torch.rand(count, channels, channels, generator=generator)
    noise = torch.einsum("ncd,ndhw->nchw", mixing, noise)
    flat = noise.reshape(count, -1)
    mean, std = flat.mean(1)[:, None, None, None], flat.std(1).clamp_min(1e-8)[:, None, None, None]
    return (0.5 + (noise - mean) / (6 * std)).clamp(0, 1)


def power_law_radii(count: int, generator: torch.Generator) -> Tensor:
    """Radii in [MIN_RADIUS, MAX_RADIUS] with density proportional to r^-RADIUS_POWER (inverse CDF)."""
    u = torch.rand(count, generator=generator)
    a, b, k = MIN_RADIUS ** (1 - RADIUS_POWER), MAX_RADIUS ** (1 - RADIUS_POWER), 1 - RADIUS_POWER
    return (a + u * (b - a)) ** (1 / k)


def dead_leaves_image(side: int, texture: Tensor, generator: torch.Generator) -> Tensor:
    """One dead-leaves image [3, side, side] in [0, 1] (see the module docstring), over `texture`
    [3, side, side] (spectral noise, added faintly)."""
    centres = (torch.rand(LEAVES, 2, generator=generator) * 1.2 - 0.1) * side
    radii = power_law_radii(LEAVES, generator) * side
    grey = torch.rand(LEAVES + 1, 1, generator=generator)
    saturation = torch.rand(LEAVES + 1, 1, generator=generator) * 0.6  # mostly muted colours, as in photos
    colours = grey + saturation * (torch.rand(LEAVES + 1, 3, generator=generator) - grey)
    slopes = (torch.rand(LEAVES + 1, 2, generator=generator) - 0.5) * 0.6 / side
    coords = torch.arange(side) + 0.5
    image = colours[LEAVES][:, None, None].expand(3, side, side).clone()  # the background
    leaves = zip(centres.tolist(), radii.tolist(), colours[:LEAVES], slopes[:LEAVES].tolist(), strict=True)
    for (cy, cx), r, colour, (sy, sx) in leaves:
        top, bottom = max(0, int(cy - r)), min(side, int(cy + r) + 1)  # the disc's bounding box only
        left, right = max(0, int(cx - r)), min(side, int(cx + r) + 1)
        if top >= bottom or left >= right:
            continue
        y, x = coords[top:bottom, None] - cy, coords[None, left:right] - cx
        inside = y**2 + x**2 < r * r
        shaded = colour[:, None, None] + sy * y + sx * x  # a smooth gradient across the leaf
        region = image[:, top:bottom, left:right]
        region.copy_(torch.where(inside, shaded, region))
    return (image + 0.3 * (texture - 0.5)).clamp(0, 1)


def dead_leaves(count: int, side: int, seed: int) -> Tensor:
    """`count` dead-leaves images [count, 3, side, side] in [0, 1], deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    textures = spectral_noise(count, side, generator)
    return torch.stack([dead_leaves_image(side, texture, generator) for texture in textures])


def natural_noise(count: int, side: int, seed: int) -> Tensor:
    """`count` spectral-noise images [count, 3, side, side] in [0, 1], deterministic for a seed."""
    return spectral_noise(count, side, torch.Generator().manual_seed(seed))
