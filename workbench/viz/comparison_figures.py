"""Figures that compare encoders: similarity and agreement maps, agreement per expert, CKA heatmaps, UMAP
scatter, resolution sweeps, and the experts' readings of images next to a student's."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from distill.standardize import TeacherStandardizer
from distill.teachers import Teacher
from workbench.eval.encoders import Encoder
from workbench.eval.expert_heads import READINGS, top_classes
from workbench.eval.similarity import (
    agreement_map,
    cosine_similarity_map,
    standardised,
)


def new_figure(panels: int, size: float = 3.2) -> tuple[Figure, list]:
    """An Agg-backed figure with one row of `panels` axes."""
    fig = Figure(figsize=(size * panels, size))
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def line_panels(titles: Sequence[str], xlabel: str, ylabel: str = "") -> tuple[Figure, list]:
    """A row of gridded line-plot panels, one per title, sharing an x label; the first has `ylabel`.

    Plot into the axes, then call `finish_line_panels`.
    """
    fig, axes = new_figure(len(titles), size=3.6)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    return fig, axes


def finish_line_panels(fig: Figure, axes: list, legend_size: int = 8, title: str = "") -> Figure:
    """Put the legend on the first panel, add the figure title, lay it out, and return the figure."""
    axes[0].legend(fontsize=legend_size)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def umap_figure(
    embeddings: dict[str, np.ndarray],
    labels: Sequence[int] | np.ndarray,
    class_names: Sequence[str],
    title: str,
) -> Figure:
    """One scatter panel per encoder of its 2-D embedding, points coloured by class, with a legend.

    Args:
        embeddings: encoder name -> [N, 2] (e.g. from `umap_embedding`).
        labels: [N] class index per point.
        class_names: name per class index.
        title: figure title.
    """
    labels = np.asarray(labels)
    if not embeddings:
        raise ValueError("umap_figure needs at least one embedding")
    if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(
            f"labels must index class_names (0..{len(class_names) - 1}), got {labels.min()}..{labels.max()}"
        )
    for name, points in embeddings.items():
        if np.shape(points) != (labels.size, 2):
            raise ValueError(
                f"embedding {name!r} must have shape [{labels.size}, 2], got {list(np.shape(points))}"
            )
    fig, axes = new_figure(len(embeddings))
    cmap = matplotlib.colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for ax, (name, points) in zip(axes, embeddings.items(), strict=True):
        for index in np.unique(labels):
            chosen = labels == index
            ax.scatter(
                *np.asarray(points)[chosen].T, s=8, color=cmap(index % cmap.N), label=class_names[index]
            )
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=8, markerscale=2)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    return fig


def heatmap_figure(
    image: Tensor,
    maps: dict[str, Tensor],
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap: str = "coolwarm",
    query: tuple[float, float] | None = None,
) -> Figure:
    """The image, then one panel per encoder with its patch heatmap laid over the image.

    Args:
        image: [3, H, W] in [0, 1].
        maps: panel title -> [h, w] values (any grid; drawn as patches stretched over the image).
        vmin, vmax, cmap: colour scale shared by all panels.
        query: optional (x, y) point in [0, 1] marked on every panel.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must have shape [3, H, W], got {list(image.shape)}")
    for name, values in maps.items():
        if values.ndim != 2:
            raise ValueError(f"map {name!r} must have shape [h, w], got {list(values.shape)}")
    height, width = image.shape[-2:]
    fig, axes = new_figure(1 + len(maps))
    picture = image.detach().permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    axes[0].imshow(picture)
    axes[0].set_title("input", fontsize=10)
    for ax, (name, values) in zip(axes[1:], maps.items(), strict=True):
        ax.imshow(picture)
        shown = ax.imshow(
            values.detach().float().cpu().numpy(),
            extent=(0, width, height, 0),
            alpha=0.65,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_title(name, fontsize=10)
    for ax in axes:
        if query is not None:
            ax.plot(query[0] * width, query[1] * height, marker="x", color="lime", markersize=10, mew=2)
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.set_xticks([])
        ax.set_yticks([])
    if maps:
        fig.colorbar(shown, ax=axes, fraction=0.02, pad=0.01)
    return fig


def similarity_figure(image: Tensor, patches: dict[str, Tensor], query: tuple[float, float]) -> Figure:
    """Cosine-similarity maps to the patch under `query` for several encoders, over one image.

    Args:
        image: [3, H, W] in [0, 1].
        patches: encoder name -> [D, h, w] features of this image.
        query: (x, y) in normalised image coordinates.
    """
    maps = {name: cosine_similarity_map(grid, query)[0] for name, grid in patches.items()}
    return heatmap_figure(image, maps, query=query)


def agreement_figure(image: Tensor, pairs: dict[str, tuple[Tensor, Tensor]]) -> Figure:
    """Student/expert agreement maps for several experts over one image, titled with the mean.

    Args:
        image: [3, H, W] in [0, 1].
        pairs: expert name -> (adapted [D, h, w], expert [D, h', w']) features of this image.
    """
    maps = {}
    for name, (adapted, expert) in pairs.items():
        values = agreement_map(adapted[None], expert[None])[0]
        maps[f"{name}: {float(values.mean()):.2f}"] = values
    return heatmap_figure(image, maps)


@torch.no_grad()
def encoder_agreement_figure(
    encoder: Encoder,
    experts: dict[str, Teacher],
    image: Tensor,
    standardizers: dict[str, TeacherStandardizer] | None = None,
) -> Figure:
    """Per-patch agreement maps of an encoder's estimates with each expert's features, over one image.

    Args:
        encoder: a distilled encoder.
        experts: name -> expert.
        image: [3, H, W] in [0, 1].
        standardizers: compare in the standardised space (see `agreement_scores`).
    """
    estimates = encoder(image[None], with_experts=True).experts
    targets = {name: expert(image[None]) for name, expert in experts.items() if name in estimates}
    if standardizers is not None:
        estimates, targets = standardised(estimates, standardizers), standardised(targets, standardizers)
    fig = agreement_figure(image, {n: (estimates[n].patches[0], targets[n].patches[0]) for n in targets})
    fig.suptitle(f"{encoder.name}: agreement with each expert (mean in the titles)", fontsize=10)
    return fig


def resolution_figure(sweep: dict[str, dict[int, dict[str, float]]], marks: Sequence[int] = ()) -> Figure:
    """One panel per expert: agreement against input side, one line per encoder.

    Args:
        sweep: `resolution_sweep` output.
        marks: sides to mark with a dotted line (e.g. the sides the students trained at).
    """
    experts = list(
        dict.fromkeys(e for per_side in sweep.values() for scores in per_side.values() for e in scores)
    )
    if not experts:
        raise ValueError("resolution_figure needs a non-empty sweep")
    fig, axes = line_panels(experts, xlabel="input side (px)", ylabel="agreement with the expert")
    for ax, expert in zip(axes, experts, strict=True):
        for name, per_side in sweep.items():
            sides = sorted(s for s in per_side if expert in per_side[s])
            ax.plot(sides, [per_side[s][expert] for s in sides], marker="o", label=name)
        for side in marks:
            ax.axvline(side, color="grey", linestyle=":", linewidth=1)
    return finish_line_panels(fig, axes)


def readings_figure(
    images: Tensor, readings: dict[str, dict[str, Tensor]], row_titles: list[str] | None = None
) -> Figure:
    """Rows = images: the image, captioned with each source's top ImageNet class, then every map reading
    (text, edges) of every source side by side.

    Args:
        images: [B, 3, H, W] in [0, 1].
        readings: source (e.g. "expert", "student") -> `read_experts` output for these images.
        row_titles: one per image.
    """
    if not readings:
        raise ValueError("readings_figure needs at least one source of readings")
    maps = [
        (expert, source)
        for expert in READINGS
        for source in readings
        if expert in readings[source] and readings[source][expert].ndim == 3
    ]
    rows, cols = images.shape[0], 1 + len(maps)
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    captions = {source: top_classes(r["semantic"], 1) for source, r in readings.items() if "semantic" in r}
    for row in range(rows):
        axes[row][0].imshow(images[row].permute(1, 2, 0).clamp(0, 1).cpu().numpy())
        text = [f"{source}: {top[row][0][0]} ({top[row][0][1]:.2f})" for source, top in captions.items()]
        axes[row][0].set_xlabel("\n".join(text), fontsize=7)
        if row_titles:
            axes[row][0].set_ylabel(row_titles[row], fontsize=9)
        for col, (expert, source) in enumerate(maps, start=1):
            axes[row][col].imshow(
                readings[source][expert][row].float().cpu().numpy(), cmap="magma", vmin=0, vmax=1
            )
            if row == 0:
                axes[row][col].set_title(f"{expert} map\n{source}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def cka_figure(
    matrices: dict[str, tuple[Sequence[str], Tensor]], vmin: float = 0.0, vmax: float = 1.0
) -> Figure:
    """One annotated heatmap per matrix (e.g. `workbench.eval.similarity.cka_matrix` of summaries, patches).

    Args:
        matrices: panel title -> (names, [K, K] matrix).
        vmin, vmax: shared colour range.
    """
    if not matrices:
        raise ValueError("cka_figure needs at least one matrix")
    for title, (names, matrix) in matrices.items():
        if tuple(matrix.shape) != (len(names), len(names)):
            raise ValueError(
                f"matrix {title!r} must be [{len(names)}, {len(names)}], got {list(matrix.shape)}"
            )
    size = max(3.2, 0.9 * max(len(names) for names, _ in matrices.values()) + 1.2)
    fig, axes = new_figure(len(matrices), size=size)
    fig.set_layout_engine("constrained")
    for ax, (title, (names, matrix)) in zip(axes, matrices.items(), strict=True):
        values = matrix.double().cpu().numpy()
        shown = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis")
        for i in range(len(names)):
            for j in range(len(names)):
                colour = "black" if values[i, j] > (vmin + vmax) / 2 else "white"
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=8, color=colour)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(title, fontsize=10)
    fig.colorbar(shown, ax=axes, fraction=0.03)
    return fig
