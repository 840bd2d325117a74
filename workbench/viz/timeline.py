"""The training timeline of a stage from its snapshots (`distill.snapshots`): the probe images' PCA maps at
any step in one fixed basis beside the experts' maps, the fidelity curves (`workbench.eval.fidelity`) of the
stages of one or more runs on shared axes, and the maps' frames over the steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from distill.run_dir import RunDir
from distill.snapshots import (
    TARGETS_FILE,
    estimates_of,
    features_of,
    read_snapshot,
    snapshot_series,
    step_file,
)
from workbench.eval.fidelity import Timeline
from workbench.viz.comparison_figures import finish_line_panels, line_panels
from workbench.viz.panels import to_picture
from workbench.viz.pca import PCABasis

BASES = (
    "last",
    "expert",
)  # a basis fitted on the last snapshot, or (for the estimates) on the expert's target
CELL = 96  # pixels per map in a picture
FIGURES = {
    "cka": "linear CKA with the target",
    "cos": "cosine of the estimate with its target",
    "rankme": "RankMe",
}


class TimelineMaps:
    """A stage's probe images with, at any snapshot step, the model's own features and its estimate of each
    expert as PCA maps in bases fixed for the whole stage, and each expert's own map.

    Args:
        run_dir: the run folder.
        stage: a stage trained with snapshots.
        basis: `last` (own features and estimates in bases fitted on the last snapshot) or `expert` (the
            estimates in the basis fitted on their expert's target; own features as for `last`).
    """

    def __init__(self, run_dir: str | Path, stage: str, basis: str = "last") -> None:
        if basis not in BASES:
            raise ValueError(f"unknown basis '{basis}' ({', '.join(BASES)})")
        self.folder = RunDir(run_dir).snapshots(stage)
        self.steps = snapshot_series(self.folder)
        tensors, meta = read_snapshot(self.folder / TARGETS_FILE)
        self.images, self.names = tensors["images"].float() / 255, meta["images"]
        self.targets = estimates_of(tensors)
        last = read_snapshot(step_file(self.folder, self.steps[-1]))[0]
        self.bases = {"features": PCABasis.fit(features_of(last, "features").patches)}
        for name, target in self.targets.items():
            self.bases[f"target/{name}"] = PCABasis.fit(target.patches)
            fitted_on = target.patches if basis == "expert" else estimates_of(last)[name].patches
            self.bases[f"estimate/{name}"] = PCABasis.fit(fitted_on)
        self.columns = ["image", "own features"] + [
            f"{kind} {name}" for name in self.targets for kind in ("estimate of", "expert")
        ]

    def picture(self, step: int) -> np.ndarray:
        """uint8 [rows * CELL, columns * CELL, 3]: a row per probe image, the columns of `self.columns`."""
        if step not in self.steps:
            raise ValueError(f"no snapshot of step {step} in {self.folder} (steps: {self.steps})")
        tensors = read_snapshot(step_file(self.folder, step))[0]
        estimates = estimates_of(tensors)
        grids = [self.bases["features"].to_rgb(features_of(tensors, "features").patches)]
        for name, target in self.targets.items():
            grids.append(self.bases[f"estimate/{name}"].to_rgb(estimates[name].patches))
            grids.append(self.bases[f"target/{name}"].to_rgb(target.patches))
        rows = [
            np.concatenate([to_picture(image, CELL)] + [to_picture(g[i], CELL) for g in grids], axis=1)
            for i, image in enumerate(self.images)
        ]
        return np.concatenate(rows, axis=0)

    def figure(self, step: int) -> Figure:
        """`picture(step)` with its columns and rows named."""
        picture = self.picture(step)
        fig = Figure(figsize=(1.3 * len(self.columns), 1.3 * len(self.names) + 0.6))
        ax = fig.add_subplot()
        ax.imshow(picture)
        ax.set_xticks(
            (np.arange(len(self.columns)) + 0.5) * CELL, self.columns, rotation=30, ha="right", fontsize=8
        )
        ax.set_yticks((np.arange(len(self.names)) + 0.5) * CELL, self.names, fontsize=8)
        ax.set_title(f"{self.folder.parent.name}, step {step}", fontsize=10)
        fig.tight_layout()
        return fig

    def frames(self) -> list[np.ndarray]:
        """Every snapshot's picture, labelled with its step (a GIF's frames: `workbench.explore.timeline`)."""
        frames = []
        for step in self.steps:
            frame = Image.fromarray(self.picture(step))
            ImageDraw.Draw(frame).text((4, 4), f"step {step}", fill=(255, 255, 255))
            frames.append(np.asarray(frame))
        return frames


def timeline_figure(timelines: list[Timeline], title: str = "") -> Figure:
    """CKA and cosine with each expert and RankMe against the step, a line per stage and target (label
    `run/stage target`), so stages of one run and runs (EUPE student vs direct) share each axis."""
    fig, axes = line_panels(list(FIGURES.values()), xlabel="step")
    for line in timelines:
        for key, values in line.scores.items():
            kind = key.rsplit("_", 1)[-1]
            target = key.rsplit("_", 1)[0] if kind != "rankme" else ""
            ax = axes[list(FIGURES).index(kind)]
            ax.plot(
                line.steps,
                values,
                marker="o",
                markersize=3,
                label=f"{line.run}/{line.stage} {target}".strip(),
            )
    for ax in axes:
        ax.legend(fontsize=7)
    return finish_line_panels(fig, axes, legend_size=7, title=title)
