"""The live demo's Segments tab: k-means of each checked encoder's patch features on the app's image, with k
chosen on a slider, overlaid on the image side by side (colours matched across encoders by overlap)."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from apps.app_parts import gallery, notes, panels, readable_errors, recompute, require_image
from workbench.explore.explorer import Explorer
from workbench.explore.segments_view import segments


class Segments:
    """The tab's callbacks, bound to one `Explorer`."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer

    @readable_errors
    def segments(self, key: str | None, specs: list[str], resolution: float, k: float) -> tuple:
        """(the image and one overlay per encoder, notes)."""
        view = segments(self.explorer, require_image(key), specs, int(resolution), int(k))
        return gallery(view.panels), notes(view)


def segments_tab(
    explorer: Explorer, key: gr.State, encoders: gr.CheckboxGroup, resolution: gr.Slider
) -> tuple[Callable, list, list]:
    """The tab's components and events, inside the current `gr.Tabs`; returns its view (callback, inputs,
    outputs) for the app to refresh after a new image, encoders or resolution."""
    calls = Segments(explorer)
    with gr.Tab("Segments", id="segments"):
        k = gr.Slider(2, 12, value=5, step=1, label="clusters (k)", elem_id="segments-k")
        found = gr.Gallery(label="k-means of patch features", elem_id="segments", **panels(4))
        segment_notes = gr.Markdown(elem_id="segments-notes")
    view = (calls.segments, [key, encoders, resolution, k], [found, segment_notes])
    k.change(*view, **recompute(calls.segments))
    return view
