"""Unsupervised segmentation for the live demo: k-means of each encoder's patch features over the image.

Features are L2-normalised before clustering (so clusters group directions, as cosine similarity does), and
k-means is seeded (scikit-learn, several restarts). Cluster numbers are arbitrary, so panels side by side are
given matching colours: the first encoder's clusters are numbered by size, and every other encoder's clusters
take the colour of the first's cluster they overlap most (a one-to-one assignment of the overlap table).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from torch import Tensor

from workbench.explore.explorer import Explorer, Panel, View
from workbench.viz.panels import label_colours, overlay
from workbench.viz.upsample import upsample

MAX_CLUSTERS = 16


def kmeans_segments(grid: Tensor, k: int, seed: int = 0) -> Tensor:
    """Cluster ids [h, w] (0 .. k - 1, the largest cluster 0) of a patch grid [D, h, w] by k-means of its
    L2-normalised patches."""
    if not 2 <= k <= MAX_CLUSTERS:
        raise ValueError(f"k must lie in [2, {MAX_CLUSTERS}], got {k}")
    rows = F.normalize(grid.float().flatten(1).T, dim=1).cpu().numpy()
    if len(rows) < k:
        raise ValueError(f"a {grid.shape[-2]}x{grid.shape[-1]} grid has fewer patches than k = {k}")
    found = KMeans(k, n_init=4, random_state=seed).fit_predict(rows)
    by_size = np.argsort(-np.bincount(found, minlength=k), kind="stable")
    return torch.from_numpy(np.argsort(by_size)[found]).reshape(grid.shape[-2:])


def matched(labels: Tensor, reference: Tensor, k: int) -> Tensor:
    """`labels` renumbered so each cluster takes the number of the `reference` cluster it overlaps most,
    one to one (both [H, W] ids in 0 .. k - 1, on one grid)."""
    overlap = torch.zeros(k, k, dtype=torch.long)
    overlap.index_put_(
        (labels.flatten(), reference.flatten()), torch.ones(labels.numel(), dtype=torch.long), True
    )
    rows, cols = linear_sum_assignment(overlap.numpy(), maximize=True)
    renumber = torch.empty(k, dtype=torch.long)
    renumber[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return renumber[labels]


def segments(explorer: Explorer, key: str, specs: list[str], resolution: int, k: int, seed: int = 0) -> View:
    """The image, then one panel per encoder: its k-means clusters (colours matched to the first encoder's,
    see the module docstring) blended over the image."""
    notes = [f"k-means of L2-normalised patch features, k = {k}; colours matched across encoders by overlap"]
    image = explorer.cache.image(key)
    size = tuple(image.shape[-2:])
    view = View([Panel(explorer.picture(key), "input")], notes=notes)
    reference = None
    for spec, features in explorer.each_features(key, specs, resolution, notes):
        grid = features.patches[0]
        try:
            labels = upsample(kmeans_segments(grid, k, seed), size).long()
        except ValueError as error:  # a grid with fewer patches than k
            notes.append(f"{explorer.encoder_name(spec)}: {error}")
            continue
        labels = labels if reference is None else matched(labels, reference, k)
        reference = labels if reference is None else reference
        caption = f"{explorer.encoder_name(spec)} · {grid.shape[-2]}x{grid.shape[-1]} patches"
        view.panels.append(Panel(overlay(image, label_colours(labels + 1, k + 1), alpha=0.55), caption))
    return view
