"""The live demo's Live tab: a webcam stream or a video file through one encoder, each frame beside the
PCA colours of its patch features in a basis fitted once (on the first frame or on the app's image) and
then frozen; the frames per second and the frames dropped while the encoder was busy are shown."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from apps.app_parts import LATEST, readable_errors, require_image
from workbench.explore.explorer import Explorer
from workbench.explore.live import LivePCA, export_video, play, video_frames

FIRST_FRAME, CURRENT_IMAGE = "the first frame", "the app's current image"
STREAM_EVERY = 0.05  # seconds between webcam frames offered to the server (one in flight at a time)
TIME_LIMIT = 600  # seconds a webcam stream runs before it stops by itself
SIDE = 320  # side of the frame and of its PCA map on the page
MAX_FRAMES = 300  # of a video file, played or exported
VIDEO_TYPES = ["video", ".gif", ".webp", ".png"]


@dataclass
class Session:
    """One browser session's live PCA, and the choices it was made for (encoder, resolution, reference)."""

    setting: tuple
    live: LivePCA


class Live:
    """The tab's callbacks, bound to one `Explorer`."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer

    def live_pca(
        self, spec: str | None, resolution: float, reference: str, key: str | None, interval: float | None
    ) -> LivePCA:
        """A `LivePCA` of the chosen encoder, its basis fitted on the app's image if that is the reference."""
        if not spec:
            raise gr.Error("pick an encoder")
        cache = self.explorer.cache
        live = LivePCA(cache.encoder(spec), int(resolution), SIDE, interval, lambda: cache.using(spec))
        if reference == CURRENT_IMAGE:
            live.fit(cache.image(require_image(key)))
        return live

    def session(
        self,
        state: Session | None,
        spec: str | None,
        resolution: float,
        reference: str,
        key: str | None,
        refits: int,
    ) -> Session:
        """The session's live PCA, made afresh when a choice changed or *Refit basis* was pressed."""
        setting = (spec, int(resolution), reference, key if reference == CURRENT_IMAGE else None, refits)
        if state is not None and state.setting == setting:
            return state
        return Session(setting, self.live_pca(spec, resolution, reference, key, STREAM_EVERY))

    @readable_errors
    def camera(
        self,
        frame: np.ndarray | None,
        spec: str | None,
        resolution: float,
        reference: str,
        key: str | None,
        refits: int,
        state: Session | None,
    ) -> tuple:
        """One webcam frame: (frame beside its PCA map, fps line, session)."""
        if frame is None:
            return gr.skip(), gr.skip(), state
        state = self.session(state, spec, resolution, reference, key, refits)
        shown = state.live.show(frame)
        return shown, state.live.stats.text(), state

    @readable_errors
    def play_video(
        self, path: str | None, spec: str | None, resolution: float, reference: str, key: str | None
    ) -> Iterator[tuple]:
        """A video file in real time: each frame shown with its PCA map; late frames are skipped."""
        if not path:
            raise gr.Error("upload a video file first (MP4, WebM, GIF)")
        live = self.live_pca(spec, resolution, reference, key, None)
        frames, fps = video_frames(path, MAX_FRAMES)
        for frame, skipped in play(frames, fps):
            shown = live.show(frame, skipped)
            yield shown, f"{live.stats.text()} · video at {fps:.1f} fps"

    @readable_errors
    def export(
        self,
        path: str | None,
        spec: str | None,
        resolution: float,
        reference: str,
        key: str | None,
        suffix: str,
    ) -> str:
        """Every frame of the video file as its PCA map, written as a GIF or an MP4 for download."""
        if not path:
            raise gr.Error("upload a video file first (MP4, WebM, GIF)")
        live = self.live_pca(spec, resolution, reference, key, None)
        out = Path(tempfile.mkdtemp(prefix="eupe-live-")) / f"{Path(path).stem}_pca.{suffix}"
        return str(export_video(live, path, out, MAX_FRAMES))

    def encoder_picker(self, selected: list[str], current: str | None) -> dict:
        """The encoder picker's choices, the encoders checked above, and its value: the current one while
        it is checked, else the last checked (a distilled student when there is a run)."""
        labels = {spec: label for label, spec in self.explorer.encoder_choices(selected)}
        value = current if current in selected else (selected[-1] if selected else None)
        return {"choices": [(labels[spec], spec) for spec in selected], "value": value}

    def encoder_update(self, selected: list[str], current: str | None) -> dict:
        """`encoder_picker` as a Gradio update."""
        return gr.update(**self.encoder_picker(selected, current))


def live_tab(explorer: Explorer, key: gr.State, encoders: gr.CheckboxGroup, resolution: gr.Slider) -> None:
    """The Live tab and its events, inside the current `gr.Tabs`, on the app's image and encoders."""
    calls = Live(explorer)
    with gr.Tab("Live", id="live"):
        state, refits = gr.State(None), gr.State(0)  # inside the tab: a State in gr.Tabs shows a 2nd tab
        gr.Markdown(
            "Start the webcam (or upload a video) to see one encoder's PCA colours frame by frame. The "
            "colour basis is fitted once, then frozen, so colours stay steady; frames that arrive while "
            "the encoder is busy are dropped, not queued."
        )
        with gr.Row():
            encoder = gr.Dropdown(
                label="Encoder",
                elem_id="live-encoder",
                scale=2,
                **calls.encoder_picker(explorer.default_specs(), None),
            )
            reference = gr.Radio([FIRST_FRAME, CURRENT_IMAGE], value=FIRST_FRAME, label="PCA basis fitted on")
            refit = gr.Button("Refit basis", scale=1, elem_id="live-refit")
        with gr.Row():
            camera = gr.Image(
                label="Webcam",
                sources=["webcam"],
                streaming=True,
                type="numpy",
                scale=1,
                elem_id="live-camera",
            )
            shown = gr.Image(
                label="frame · PCA of patch features (frozen basis)",
                interactive=False,
                format="jpeg",
                scale=2,
                elem_id="live-out",
            )
        fps = gr.Markdown(elem_id="live-fps")
        with gr.Row():
            video = gr.File(
                label="or a video file (MP4, WebM, GIF)",
                file_types=VIDEO_TYPES,
                scale=2,
                elem_id="live-video",
            )
            with gr.Column(scale=1):
                suffix = gr.Radio(["gif", "mp4"], value="gif", label="Export format")
                export = gr.Button("Export the PCA video", elem_id="live-export-button")
            exported = gr.File(label="PCA video", interactive=False, scale=2, elem_id="live-export")

    choices = [encoders, encoder]
    encoders.change(calls.encoder_update, choices, encoder, **LATEST)
    chosen = [encoder, resolution, reference, key]
    # the webcam sends no frame while one is in flight, so frames the encoder is too slow for are dropped
    # by the browser, not queued ("always_last" would stop the stream after its first frame)
    camera.stream(
        calls.camera,
        [camera, *chosen, refits, state],
        [shown, fps, state],
        stream_every=STREAM_EVERY,
        time_limit=TIME_LIMIT,
        concurrency_limit=1,
        show_progress="hidden",
    )
    refit.click(lambda count: count + 1, refits, refits)
    video.upload(calls.play_video, [video, *chosen], [shown, fps], show_progress="minimal")
    export.click(calls.export, [video, *chosen, suffix], exported, show_progress="minimal")
