"""`eupe app`: the live demo. Drop in an image and see what each expert, the proxy and the students see.

A thin Gradio layer over `workbench.explore.explorer.Explorer`: the callbacks below are plain functions of the
widgets' values (testable without a browser); features are computed once per image, encoder and
resolution, so moving a display control, clicking a point or switching tabs recomputes nothing.
Every error reaches the page as a one-line message (`gr.Error`), never as a stack trace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no phoning home

import gradio as gr

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
from apps.correspondence_tab import correspondence_tab
from apps.live_tab import live_tab
from apps.propagation_tab import propagation_tab
from apps.segments_tab import segments_tab
from distill.data.photos import photo_names
from distill.run_dir import trained_resolution
from distill.teachers import EXPERTS
from workbench.eval.encoders import is_checkpoint
from workbench.explore.attention_view import attention_maps
from workbench.explore.explorer import OWN_SPACE, Explorer

RESOLUTION = {"minimum": 32, "maximum": 512, "step": 16, "value": 224}  # value: unless a student says
JOINT_NOTE = "in an expert space: every panel in the expert's own basis"
FIRST_PHOTO = "astronaut"
LAYERS = [("last", -1), *((f"last − {n}", -1 - n) for n in range(1, 12))]  # counted from the output


def chosen_layer(value: float | None) -> int | None:
    """The layer a Layer dropdown value names: None for the last (the encoder's own, cached features)."""
    return None if value is None or int(value) == -1 else int(value)


NO_RUNS = (
    "No proxy or student yet: make a run with `eupe pipeline --config configs/toy.yaml --out runs/toy` "
    "(minutes on a CPU), then press *Rescan runs*."
)


class Callbacks:
    """The demo's event handlers, bound to one `Explorer`."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer

    # image in: each returns (image key, picture for the Similarity tab, query point); a photo or a scene
    # also its working image for the upload box, so the box always shows the image being looked at
    def loaded(self, key: str) -> tuple:
        return key, self.explorer.picture(key, CENTRE), CENTRE

    @readable_errors
    def load_upload(self, path: str | None) -> tuple:
        if not path:  # the image was cleared
            return gr.skip(), gr.skip(), gr.skip()
        return self.loaded(self.explorer.load_file(path))

    @readable_errors
    def load_photo(self, name: str) -> tuple:
        key = self.explorer.load_photo(name)
        return *self.loaded(key), self.explorer.picture(key)

    @readable_errors
    def load_scene(self, seed: float) -> tuple:
        key = self.explorer.load_scene(int(seed))
        return *self.loaded(key), self.explorer.picture(key)

    # encoders
    def encoder_updates(self, selected: list[str], extra: list[str]) -> tuple:
        """Updates of the encoder checkboxes and the two single-encoder pickers, and a note."""
        choices = self.explorer.encoder_choices(extra)
        distilled = [choice for choice in choices if is_checkpoint(choice[1])]
        picked = [spec for spec in selected if is_checkpoint(spec)] or [spec for _, spec in distilled]
        student = picked[-1] if picked else None
        return (
            gr.update(choices=choices, value=selected),
            gr.update(choices=distilled, value=student),
            gr.update(choices=choices, value=student or (selected[0] if selected else None)),
            "" if distilled else NO_RUNS,
        )

    @readable_errors
    def add_encoders(self, text: str, selected: list[str], extra: list[str]) -> tuple:
        """Add typed specs (timm names, run stage or checkpoint folders), each checked by loading it."""
        specs = [s.strip() for s in text.replace("\n", ",").split(",") if s.strip()]
        if not specs:
            raise gr.Error(
                "type a timm name (e.g. timm:resnet18) or a run stage folder (e.g. runs/toy/student)"
            )
        for spec in specs:
            self.explorer.cache.encoder(spec)  # a broken checkpoint or unknown name raises a one-line error
        extra = extra + [s for s in specs if s not in extra]
        selected = selected + [s for s in specs if s not in selected]
        return (*self.encoder_updates(selected, extra), extra, "")

    @readable_errors
    def rescan(self, selected: list[str], extra: list[str]) -> tuple:
        return self.encoder_updates(selected, extra)

    # views
    @readable_errors
    def feature_maps(
        self,
        key: str | None,
        specs: list[str],
        resolution: float,
        space: str,
        joint: bool,
        masked: bool,
        threshold: float,
        layer: float = -1,
        smooth: bool = False,
        attention: bool = False,
        keep_aspect: bool = False,
        centred: bool = False,
    ) -> Iterator[tuple]:
        key = require_image(key)
        start = time.perf_counter()
        if attention:
            view = attention_maps(
                self.explorer, key, specs, int(resolution), chosen_layer(layer), smooth, keep_aspect
            )
            yield (
                gallery(view.panels),
                notes(view, f"CLS→patch attention · {time.perf_counter() - start:.2f} s"),
            )
            return
        bases = "joint basis (the expert's)" if joint and space != OWN_SPACE else "one basis each"
        shown = f"{space} · {bases} · " + (
            f"background masked (threshold {threshold:g} std)" if masked else "unmasked"
        )
        shown += " · position mean removed" if centred else ""
        views = self.explorer.feature_maps(
            key,
            specs,
            int(resolution),
            space,
            joint,
            masked,
            threshold,
            chosen_layer(layer),
            smooth,
            keep_aspect,
            centred,
        )
        for view in views:
            seconds = time.perf_counter() - start
            done = f"{max(len(view.panels) - 1, 0)} of {len(specs)} encoders · {seconds:.2f} s"
            yield gallery(view.panels), notes(view, done, shown)

    @staticmethod
    def joint_offer(space: str) -> dict:
        """The Joint PCA basis box: offered (and kept) in an expert space, unticked and off in own features,
        where different encoders' features share no axes."""
        if space == OWN_SPACE:
            return gr.update(value=False, interactive=False)
        return gr.update(interactive=True)

    @readable_errors
    def similarity(
        self,
        key: str | None,
        specs: list[str],
        resolution: float,
        point: tuple,
        layer: float = -1,
        smooth: bool = False,
        keep_aspect: bool = False,
    ) -> tuple:
        key = require_image(key)
        view = self.explorer.similarity(
            key, specs, int(resolution), tuple(point), chosen_layer(layer), smooth, keep_aspect
        )
        return self.explorer.picture(key, tuple(point), keep_aspect), gallery(view.panels), notes(view)

    @readable_errors
    def click(
        self,
        key: str | None,
        specs: list[str],
        resolution: float,
        event: gr.SelectData,
        layer: float = -1,
        smooth: bool = False,
        keep_aspect: bool = False,
    ) -> tuple:
        """A click on the Similarity tab's image (the square or, with `keep_aspect`, the whole image): the
        query point moves there (Gradio passes the event fourth, before the inputs that follow it)."""
        shown = self.explorer.cache.image(require_image(key), keep_aspect).shape[-2:]
        point = clicked_point(event, tuple(shown))
        return (point, *self.similarity(key, specs, resolution, point, layer, smooth, keep_aspect))

    @readable_errors
    def teacher_student(self, key: str | None, spec: str | None, resolution: float) -> tuple:
        key = require_image(key)
        if not spec:
            return [], [], [], NO_RUNS
        view = self.explorer.teacher_student(key, spec, int(resolution))
        return gallery(view.panels), gallery(view.readings), view.table, notes(view)

    @readable_errors
    def probes(self, key: str | None, spec: str | None, resolution: float) -> tuple:
        key = require_image(key)
        if not spec:
            return [], "pick an encoder"
        view = self.explorer.probes(key, spec, int(resolution))
        return gallery(view.panels), notes(view)


@dataclass
class Controls:
    """The widgets above the tabs: the image in, and the encoders and settings every view reads."""

    image_in: gr.Image
    photo: gr.Dropdown
    seed: gr.Number
    scene: gr.Button
    encoders: gr.CheckboxGroup
    typed: gr.Textbox
    add: gr.Button
    rescan: gr.Button
    resolution: gr.Slider
    layer: gr.Dropdown
    smooth: gr.Checkbox
    keep_aspect: gr.Checkbox
    encoder_notes: gr.Markdown


@dataclass
class MapsTab:
    """The Feature maps tab's widgets."""

    space: gr.Dropdown
    joint: gr.Checkbox
    masked: gr.Checkbox
    centred: gr.Checkbox
    threshold: gr.Slider
    attention: gr.Checkbox
    maps: gr.Gallery
    notes: gr.Markdown


@dataclass
class SimilarityTab:
    """The Similarity tab's widgets."""

    query: gr.Image
    similar: gr.Gallery
    notes: gr.Markdown


@dataclass
class TeacherTab:
    """The Teacher vs student tab's widgets."""

    student: gr.Dropdown
    agreement: gr.Gallery
    readings: gr.Gallery
    labels: gr.Dataframe
    notes: gr.Markdown


@dataclass
class ProbesTab:
    """The Probes tab's widgets."""

    probed: gr.Dropdown
    predictions: gr.Gallery
    notes: gr.Markdown


@dataclass
class Page:
    """Every widget the demo's events connect: the session's state, the controls and the tabs."""

    key: gr.State
    point: gr.State
    extra: gr.State
    controls: Controls
    maps: MapsTab
    similarity: SimilarityTab
    teacher: TeacherTab
    probes: ProbesTab
    matches_view: tuple
    segments_view: tuple


def build_app(explorer: Explorer) -> gr.Blocks:
    """The demo's Blocks: image in, encoder choice, and one tab per view."""
    calls = Callbacks(explorer)
    specs = explorer.default_specs()
    side = trained_resolution(specs, RESOLUTION["value"])
    with gr.Blocks(title="EUPE workbench · live demo", analytics_enabled=False) as demo:
        key, point, extra = gr.State(None), gr.State(CENTRE), gr.State([])
        gr.Markdown(intro(side))
        controls = control_rows(explorer, specs, side)
        with gr.Tabs():
            tabs = maps_tab(), similarity_tab(), teacher_tab(), probes_tab()
            matches_view = correspondence_tab(explorer, key, controls.encoders, controls.resolution)
            live_tab(explorer, key, controls.encoders, controls.resolution)
            segments_view = segments_tab(explorer, key, controls.encoders, controls.resolution)
            propagation_tab(explorer, controls.encoders, controls.resolution)
        wire_events(demo, calls, Page(key, point, extra, controls, *tabs, matches_view, segments_view))
    return demo


def intro(side: int) -> str:
    """The page's heading, and the resolution it opens at when a student says other than the default."""
    return (
        "## EUPE workbench · what each encoder sees\n"
        "Load an image, choose encoders, then browse the tabs. Features are computed once per image, "
        "encoder and resolution."
        + (
            f" The resolution starts at {side} px, the largest side the last student trained at."
            if side != RESOLUTION["value"]
            else ""
        )
    )


def control_rows(explorer: Explorer, specs: list[str], side: int) -> Controls:
    """The image in (upload, photo, scene) beside the encoders and the settings, above the tabs."""
    with gr.Row():
        with gr.Column(scale=1):
            image_in = gr.Image(
                label="Image (upload, webcam or paste)",
                sources=["upload", "webcam", "clipboard"],
                type="filepath",
                image_mode=None,  # the file as uploaded: open_image checks its size before decoding
                height=260,
                elem_id="image-in",
            )
            photo = gr.Dropdown(photo_names(), value=FIRST_PHOTO, label="or a bundled photo")
            with gr.Row():
                seed = gr.Number(0, label="or a generated scene (seed)", precision=0, minimum=0)
                scene = gr.Button("Generate scene", elem_id="scene-button")
        with gr.Column(scale=2):
            encoders = gr.CheckboxGroup(
                explorer.encoder_choices(), value=specs, label="Encoders", elem_id="encoders"
            )
            with gr.Row():
                typed = gr.Textbox(
                    label="Add encoders",
                    placeholder="timm:resnet18 (random weights offline), runs/NAME/STAGE, ...",
                    scale=3,
                )
                add = gr.Button("Add", scale=1)
                rescan = gr.Button("Rescan runs", scale=1)
            resolution = gr.Slider(
                **RESOLUTION | {"value": side}, label="Input resolution (px)", elem_id="resolution"
            )
            with gr.Row():
                layer = gr.Dropdown(
                    LAYERS, value=-1, label="Layer (feature maps, similarity)", elem_id="layer"
                )
                smooth = gr.Checkbox(False, label="Smooth (bicubic)", elem_id="smooth")
                keep_aspect = gr.Checkbox(
                    False, label="Keep aspect ratio (feature maps, similarity)", elem_id="keep-aspect"
                )
            encoder_notes = gr.Markdown(elem_id="encoder-notes")
    return Controls(image_in, photo, seed, scene, encoders, typed, add, rescan, resolution, layer, smooth,
                    keep_aspect, encoder_notes)  # fmt: skip


def maps_tab() -> MapsTab:
    """The Feature maps tab, inside the current `gr.Tabs`."""
    with gr.Tab("Feature maps", id="maps"):
        with gr.Row():
            space = gr.Dropdown(
                [OWN_SPACE, *EXPERTS], value=OWN_SPACE, label="Feature space", elem_id="space"
            )
            joint = gr.Checkbox(
                False, label="Joint PCA basis", info=JOINT_NOTE, interactive=False, elem_id="joint"
            )
            masked = gr.Checkbox(False, label="Mask background")
            centred = gr.Checkbox(
                False,
                label="Remove position mean",
                info="each position's mean over photos: what position alone explains",
                elem_id="centred",
            )
            threshold = gr.Slider(-1, 1, value=0, step=0.1, label="Foreground threshold (std)")
            attention = gr.Checkbox(False, label="Attention (CLS→patch)", elem_id="attention")
        maps = gr.Gallery(label="PCA of patch features", elem_id="maps", **panels(4))
        notes = gr.Markdown(elem_id="maps-notes")
    return MapsTab(space, joint, masked, centred, threshold, attention, maps, notes)


def similarity_tab() -> SimilarityTab:
    """The Similarity tab, inside the current `gr.Tabs`."""
    with gr.Tab("Similarity", id="similarity"):
        with gr.Row():
            query = gr.Image(label="Click a point", interactive=False, height=300, scale=1, elem_id="query")
            similar = gr.Gallery(
                label="Cosine similarity to the clicked patch",
                scale=3,
                elem_id="similar",
                **panels(3),
            )
        notes = gr.Markdown(elem_id="similar-notes")
    return SimilarityTab(query, similar, notes)


def teacher_tab() -> TeacherTab:
    """The Teacher vs student tab, inside the current `gr.Tabs`."""
    with gr.Tab("Teacher vs student", id="teacher"):
        student = gr.Dropdown(label="Distilled encoder", elem_id="student")
        agreement = gr.Gallery(
            label="Agreement of its estimates with each expert's features (cosine per patch)",
            elem_id="agreement",
            **panels(3),
        )
        readings = gr.Gallery(
            label="Each expert's head on its own features and on the distilled encoder's estimates",
            elem_id="readings",
            **panels(4),
        )
        labels = gr.Dataframe(
            headers=["rank", "semantic expert", "via the distilled encoder"],
            label="ImageNet top-5",
            interactive=False,
            elem_id="labels",
        )
        notes = gr.Markdown()
    return TeacherTab(student, agreement, readings, labels, notes)


def probes_tab() -> ProbesTab:
    """The Probes tab, inside the current `gr.Tabs`."""
    with gr.Tab("Probes", id="probes"):
        probed = gr.Dropdown(label="Encoder", elem_id="probed")
        predictions = gr.Gallery(label="Linear probe predictions", elem_id="predictions", **panels(4))
        notes = gr.Markdown(elem_id="probe-notes")
    return ProbesTab(probed, predictions, notes)


def page_views(calls: Callbacks, page: Page) -> tuple:
    """Each view as (callback, inputs, outputs), in the order they are refreshed after a new image: the
    Teacher vs student tab, the slowest, last."""
    c, maps, similarity, teacher, probes = (
        page.controls,
        page.maps,
        page.similarity,
        page.teacher,
        page.probes,
    )
    return (
        (
            calls.feature_maps,
            [
                page.key,
                c.encoders,
                c.resolution,
                maps.space,
                maps.joint,
                maps.masked,
                maps.threshold,
                c.layer,
                c.smooth,
                maps.attention,
                c.keep_aspect,
                maps.centred,
            ],
            [maps.maps, maps.notes],
        ),
        (
            calls.similarity,
            [page.key, c.encoders, c.resolution, page.point, c.layer, c.smooth, c.keep_aspect],
            [similarity.query, similarity.similar, similarity.notes],
        ),
        (calls.probes, [page.key, probes.probed, c.resolution], [probes.predictions, probes.notes]),
        (
            calls.teacher_student,
            [page.key, teacher.student, c.resolution],
            [teacher.agreement, teacher.readings, teacher.labels, teacher.notes],
        ),
        page.matches_view,
        page.segments_view,
    )


def wire_events(demo: gr.Blocks, calls: Callbacks, page: Page) -> None:
    """The demo's events: a new image, encoders or resolution refresh every view; a view's own controls
    refresh that view."""
    c, maps = page.controls, page.maps
    loaded = (page.key, page.similarity.query, page.point)
    pickers = (c.encoders, page.teacher.student, page.probes.probed, c.encoder_notes)
    views = page_views(calls, page)

    def then_views(event: gr.events.Dependency, views: tuple = views) -> None:
        for fn, inputs, outputs in views:
            event = event.success(fn, inputs, outputs, **recompute(fn))

    then_views(c.image_in.input(calls.load_upload, c.image_in, loaded, **LATEST))
    then_views(c.photo.input(calls.load_photo, c.photo, [*loaded, c.image_in], **LATEST))
    then_views(c.scene.click(calls.load_scene, c.seed, [*loaded, c.image_in], **LATEST))
    then_views(
        demo.load(calls.load_photo, c.photo, [*loaded, c.image_in], **LATEST).then(
            calls.rescan, [c.encoders, page.extra], pickers, **LATEST
        )
    )
    then_views(
        c.add.click(
            calls.add_encoders, [c.typed, c.encoders, page.extra], [*pickers, page.extra, c.typed], **LATEST
        )
    )
    maps_view, _, probes_view, teacher_view, *_ = views
    then_views(
        gr.on([c.encoders.input, c.resolution.change], *maps_view, **recompute(calls.feature_maps)), views[1:]
    )
    c.rescan.click(calls.rescan, [c.encoders, page.extra], pickers, **LATEST)
    maps.space.input(calls.joint_offer, maps.space, maps.joint, **LATEST).then(
        *maps_view, **recompute(calls.feature_maps)
    )
    gr.on(
        [
            maps.joint.input,
            maps.masked.input,
            maps.centred.input,
            maps.threshold.change,
            maps.attention.input,
        ],
        *maps_view,
        **recompute(calls.feature_maps),
    )
    then_views(
        gr.on(
            [c.layer.input, c.smooth.input, c.keep_aspect.input], *maps_view, **recompute(calls.feature_maps)
        ),
        views[1:2],
    )
    similarity = page.similarity
    similarity.query.select(
        calls.click,
        [page.key, c.encoders, c.resolution, c.layer, c.smooth, c.keep_aspect],
        [page.point, similarity.query, similarity.similar, similarity.notes],
        **recompute(calls.similarity),
    )
    page.teacher.student.input(*teacher_view, **recompute(calls.teacher_student))
    page.probes.probed.input(*probes_view, **recompute(calls.probes))
