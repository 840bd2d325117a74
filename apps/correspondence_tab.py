"""The live demo's Correspondence tab: click a point in image A (the app's image) and see where each
encoder finds it in image B (A under a random warp, a bundled photo, or an upload), optionally with
each encoder's mutual nearest-neighbour matches drawn as lines from A to B."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
from torch import Tensor

from apps.app_parts import (
    CENTRE,
    LATEST,
    clicked_point,
    gallery,
    notes,
    panels,
    readable_errors,
    recompute,
    require_image,
)
from distill.data.photos import photo_names
from workbench.explore.correspondence_view import add_warped, correspondence, point_in_b
from workbench.explore.explorer import Explorer

WARP, PHOTO, UPLOAD = "A under a random warp", "a bundled photo", "an upload"
SECOND_PHOTO = "coffee"


class Correspondence:
    """The tab's callbacks, bound to one `Explorer`."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer

    def image_b(
        self, key: str, source: str, seed: float, photo: str, upload: str | None
    ) -> tuple[str, Tensor | None]:
        """Image B's key, and its warp of A (a [3, 3] homography) when it is one."""
        if source == WARP:
            return add_warped(self.explorer, key, int(seed))
        if source == PHOTO:
            return self.explorer.load_photo(photo), None
        if source != UPLOAD:
            raise ValueError(f"unknown source of image B '{source}'; choose {WARP}, {PHOTO} or {UPLOAD}")
        if not upload:
            raise gr.Error("upload an image B first, or choose another source for B")
        return self.explorer.load_file(upload), None

    @readable_errors
    def matches(
        self,
        key: str | None,
        specs: list[str],
        resolution: float,
        point: tuple,
        source: str,
        seed: float,
        photo: str,
        upload: str | None,
        lines: bool,
    ) -> tuple:
        """(A with the clicked cross, one panel of B per encoder, notes)."""
        key = require_image(key)
        point = (float(point[0]), float(point[1]))
        key_b, warp = self.image_b(key, source, seed, photo, upload)
        truth = point_in_b(warp, point) if warp is not None else None
        view = correspondence(self.explorer, key, key_b, specs, int(resolution), point, lines, truth)
        return self.explorer.picture(key, point), gallery(view.panels), notes(view)

    @readable_errors
    def click(
        self,
        key: str | None,
        specs: list[str],
        resolution: float,
        source: str,
        seed: float,
        photo: str,
        upload: str | None,
        lines: bool,
        event: gr.SelectData,
    ) -> tuple:
        """A click on A: the point moves there, and its matches follow."""
        point = clicked_point(event, self.explorer.display)
        return (point, *self.matches(key, specs, resolution, point, source, seed, photo, upload, lines))


def choose(source: str) -> Callable[[], str]:
    """A callback that sets the source of B (when its seed, photo or upload is changed)."""

    def chosen() -> str:
        return source

    chosen.__name__ = f"choose_{source.split()[-1]}"
    return chosen


def correspondence_tab(
    explorer: Explorer, key: gr.State, encoders: gr.CheckboxGroup, resolution: gr.Slider
) -> tuple[Callable, list, list]:
    """The tab's components and events, inside the current `gr.Tabs`; returns its view (callback, inputs,
    outputs) for the app to refresh after a new image, encoders or resolution."""
    calls = Correspondence(explorer)
    with gr.Tab("Correspondence", id="correspondence"):
        point = gr.State(CENTRE)
        with gr.Row():
            picture_a = gr.Image(
                label="A: click a point", interactive=False, height=300, scale=1, elem_id="match-a"
            )
            found = gr.Gallery(
                label="Its best match in B, per encoder (green cross; white: where it truly is)",
                scale=3,
                elem_id="matches",
                **panels(3),
            )
        with gr.Row():
            source = gr.Radio([WARP, PHOTO, UPLOAD], value=WARP, label="Image B", elem_id="source-b")
            seed = gr.Number(0, label="warp seed", precision=0, minimum=0, elem_id="warp-seed")
            photo = gr.Dropdown(photo_names(), value=SECOND_PHOTO, label="bundled photo B")
            upload = gr.Image(
                label="upload B",
                sources=["upload", "clipboard"],
                type="filepath",
                image_mode=None,
                height=140,
            )
            lines = gr.Checkbox(False, label="Mutual nearest-neighbour matches as lines", elem_id="lines")
        match_notes = gr.Markdown(elem_id="match-notes")

    settings = [source, seed, photo, upload, lines]
    view = (calls.matches, [key, encoders, resolution, point, *settings], [picture_a, found, match_notes])
    picture_a.select(
        calls.click, [key, encoders, resolution, *settings], [point, *view[2]], **recompute(calls.matches)
    )
    gr.on([source.input, lines.input], *view, **recompute(calls.matches))
    for widget, chosen in ((seed, WARP), (photo, PHOTO), (upload, UPLOAD)):
        widget.input(choose(chosen), None, source, **LATEST).then(*view, **recompute(calls.matches))
    return view
