"""The live demo's Propagation tab: a generated clip or an uploaded video, its first frame's labels carried
through the frames by each checked encoder's patch-feature affinity (DINO's video segmentation protocol),
played as an animated GIF and frame by frame with a slider; on a generated clip, J and F against its masks."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import numpy as np

from apps.app_parts import readable_errors
from workbench.eval.propagation import PropagationSettings
from workbench.explore.explorer import Explorer
from workbench.explore.live import write_video
from workbench.explore.propagation_view import (
    Video,
    first_labels,
    generated_video,
    mask_image,
    propagation,
    uploaded_video,
)

GENERATED, UPLOADED = "a generated clip", "an uploaded video"
MAX_FRAMES = 32  # of an uploaded video
DEFAULTS = PropagationSettings()


class Propagate:
    """The tab's callbacks, bound to one `Explorer`."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer

    def video(self, source: str, seed: float, frames: float, path: str | None) -> Video:
        """The generated clip of a seed, or the uploaded video's first frames."""
        side = self.explorer.display
        if source == GENERATED:
            return generated_video(int(seed), int(frames), side)
        if source != UPLOADED:
            raise ValueError(f"unknown video source '{source}'; choose {GENERATED} or {UPLOADED}")
        if not path:
            raise gr.Error("upload a video first (MP4, WebM, GIF), or choose a generated clip")
        return uploaded_video(path, side, MAX_FRAMES)

    @readable_errors
    def run(
        self,
        specs: list[str],
        resolution: float,
        source: str,
        seed: float,
        frames: float,
        path: str | None,
        mask: str | None,
        k: float,
        top_k: float,
        context: float,
    ) -> Iterator[tuple]:
        """(animated GIF, the pictures per frame, the frame slider, the last frame's picture, notes), yielded
        after each encoder."""
        if not specs:
            raise gr.Error("check at least one encoder above")
        video = self.video(source, seed, frames, path)
        resolution = int(resolution)
        notes = []
        if video.truth is not None:
            first = video.truth[0]
        elif mask:
            first = mask_image(mask, self.explorer.display)
        else:
            first = first_labels(self.explorer, video, specs[0], resolution, int(k))
            notes.append(
                f"first-frame labels: k-means (k = {int(k)}) of {self.explorer.encoder_name(specs[0])}, "
                "its largest cluster the background"
            )
        settings = PropagationSettings(top_k=int(top_k), context=int(context))
        out = Path(tempfile.mkdtemp(prefix="eupe-propagation-")) / "propagation.gif"
        for shown in propagation(self.explorer, video, specs, resolution, first, settings):
            last = len(shown.pictures) - 1
            text = "  \n".join([" · ".join(shown.captions), *notes, *shown.notes])
            gif = str(write_video(shown.pictures, out, video.fps))
            slider = gr.update(maximum=last, value=last)
            yield gif, shown.pictures, slider, shown.pictures[last], text

    @staticmethod
    def frame(pictures: list[np.ndarray] | None, index: float) -> np.ndarray | dict:
        """The picture of one frame (nothing to show before a run)."""
        if not pictures:
            return gr.skip()
        return pictures[min(int(index), len(pictures) - 1)]


def propagation_tab(explorer: Explorer, encoders: gr.CheckboxGroup, resolution: gr.Slider) -> None:
    """The Propagation tab and its events, inside the current `gr.Tabs`, on the app's checked encoders."""
    calls = Propagate(explorer)
    with gr.Tab("Propagation", id="propagation"):
        pictures = gr.State(None)
        gr.Markdown(
            "The first frame's labels are carried through the video by each checked encoder: every patch "
            "takes the labels of its most similar patches in the first and the previous frames. On a "
            "generated clip the true masks are known, so J (region IoU) and F (boundary) are measured."
        )
        with gr.Row():
            source = gr.Radio([GENERATED, UPLOADED], value=GENERATED, label="Video", elem_id="prop-source")
            seed = gr.Number(0, label="clip seed", precision=0, minimum=0, elem_id="prop-seed")
            frames = gr.Slider(2, 16, value=8, step=1, label="clip frames")
            top_k = gr.Slider(1, 20, value=DEFAULTS.top_k, step=1, label="top-k patches")
            context = gr.Slider(0, 10, value=DEFAULTS.context, step=1, label="previous frames")
        with gr.Row():
            video = gr.File(label="video (MP4, WebM, GIF)", file_types=["video", ".gif"], scale=2)
            mask = gr.Image(
                label="first-frame mask (one colour per object; darkest = background)",
                sources=["upload"],
                type="filepath",
                image_mode=None,
                height=140,
                scale=1,
            )
            k = gr.Slider(2, 8, value=4, step=1, label="or k-means labels (k)", scale=1)
        run = gr.Button("Propagate", variant="primary", elem_id="prop-run")
        with gr.Row():
            animation = gr.Image(label="propagation (animated)", interactive=False, elem_id="prop-gif")
            with gr.Column():
                shown = gr.Image(label="one frame", interactive=False, elem_id="prop-frame")
                index = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="prop-index")
        notes = gr.Markdown(elem_id="prop-notes")

    inputs = [encoders, resolution, source, seed, frames, video, mask, k, top_k, context]
    run.click(calls.run, inputs, [animation, pictures, index, shown, notes], show_progress="minimal")
    index.change(calls.frame, [pictures, index], shown, show_progress="hidden")
