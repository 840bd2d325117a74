"""What the live demo shows, from cached features: PCA maps, similarity to a clicked patch, a distilled
encoder's agreement with its experts and its reconstruction of their readings, and probe predictions.

Every view takes an image key (from `add_image`), encoder specs and a resolution, and returns `Panel`s
(uint8 pictures with captions) and notes; an encoder that cannot be loaded becomes a note, not an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors import SafetensorError
from torch import Tensor

from distill.data.images import native_view, pil_to_tensor, square_view
from distill.data.photos import load_photo, photo_names
from distill.data.scenes import SEGMENT_CLASSES, SceneBatch, SceneGenerator
from distill.features import Features
from distill.stages import EUPE_STUDENT, STAGES
from distill.teachers import EXPERTS
from distill.teachers.registry import expert_spec, registered_teachers
from workbench.eval.encoders import EncoderFeatures, floor_spec, is_checkpoint
from workbench.eval.expert_heads import expert_reading, top_classes
from workbench.eval.probes.saved import load_probe
from workbench.eval.similarity import agreement_map, cosine_similarity_map
from workbench.explore.encoder_cache import LRU, EncoderCache
from workbench.explore.runs import Run, find_probes, list_runs
from workbench.viz.panels import (
    colorize,
    hex_colour,
    label_colours,
    mark_point,
    overlay,
    palette,
    pca_colours,
    to_picture,
)
from workbench.viz.upsample import upsample

MAX_PIXELS = 40_000_000  # larger uploads are refused
OWN_SPACE = "own features"
POSITION_PHOTOS = 8  # the bundled photos (the first, by name) whose mean patch per position `centred` removes
PROBES_TRAINED_ON = "trained on generated scenes"
ON_A_PHOTO = "; on a photo they can only answer in the scenes' terms (their shapes, signs and backgrounds)"
UNREADABLE_PROBE = (RuntimeError, ValueError, KeyError, OSError, SafetensorError)  # damaged, or other code's


@dataclass
class Panel:
    """One picture of a view: uint8 [H, W, 3] and its caption."""

    image: np.ndarray
    caption: str


@dataclass
class View:
    """What a tab shows: pictures, the experts' head readings and a table (rows of cells) where it has
    them (Teacher vs student), and notes for the status line."""

    panels: list[Panel] = field(default_factory=list)
    readings: list[Panel] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Tensor:
    """An image file as [3, H, W] in [0, 1] (EXIF orientation applied), with one-line errors.

    Raises:
        ValueError: the file is not a readable image, or it has more than `max_pixels` pixels.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(
                    f"{path.name} is {width}x{height} ({width * height / 1e6:.0f} MP); "
                    f"the limit is {max_pixels / 1e6:g} MP: downscale it first"
                )
            image.load()
            return pil_to_tensor(ImageOps.exif_transpose(image))
    except (UnidentifiedImageError, Image.DecompressionBombError) as error:
        raise ValueError(f"{path.name} is not a readable image ({type(error).__name__})") from error
    except OSError as error:
        raise ValueError(f"{path.name} could not be decoded as an image: {error}") from error


def top5(probabilities: Tensor) -> list[str]:
    """The five most probable ImageNet classes of a [1000] vector, as 'label (p)'."""
    return [f"{name} ({p:.2f})" for name, p in top_classes(probabilities[None], k=5)[0]]


def probe_picture(task: str, prediction: Tensor) -> tuple[Tensor, str, str]:
    """Colours [3, H, W], caption and legend (HTML, segmentation only) of one probe's [H, W] prediction."""
    if task == "segmentation":
        table = palette(len(SEGMENT_CLASSES))
        present = sorted(int(c) for c in prediction.unique())
        legend = ", ".join(
            f'<span style="color:{hex_colour(table[c])}">■</span> {SEGMENT_CLASSES[c]}' for c in present
        )
        return label_colours(prediction, len(SEGMENT_CLASSES)), "segmentation", f"segments: {legend}"
    if task == "depth":
        low, high = float(prediction.min()), float(prediction.max())
        colours = colorize(prediction, "viridis_r", low, max(high, low + 1e-6))
        return colours, f"depth · {low:.2f} to {high:.2f}", "depth: yellow near, purple far"
    return colorize(prediction, "magma", 0, 1), f"{task} probability", ""


class Explorer:
    """Views of encoders on one image at a time, from features computed once per image/encoder/resolution.

    Args:
        runs_root: folder of runs (or one run) whose proxies and students are offered; None for none.
        display: side of the square working copy of each image and of the pictures (a native-aspect copy
            keeps the area of that square).
        cache: the encoder cache (default: a new one; timm models with random weights).
        max_pixels: larger image files are refused.
    """

    def __init__(
        self,
        runs_root: str | Path | None = None,
        display: int = 448,
        cache: EncoderCache | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.runs_root = Path(runs_root) if runs_root is not None else None
        self.display = display
        self.cache = cache or EncoderCache()
        self.max_pixels = max_pixels
        self.scenes = LRU(16)  # image key -> the generated scene's labels (ground truth beside probes)
        self.position_means = LRU(16)  # (spec, resolution, space, layer) -> [1, D, h, w]
        self.position_photos: Tensor | None = None

    def runs(self) -> list[Run]:
        """The runs under `runs_root`, read afresh (new runs appear without a restart)."""
        return list_runs(self.runs_root) if self.runs_root is not None else []

    def encoder_choices(self, extra: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """(label, spec) of every encoder on offer: the experts, each run stage with a checkpoint, `extra`."""
        choices = [(f"{name} (expert)", name) for name in EXPERTS]
        for run in self.runs():
            choices += [(f"{s.label} ({s.role})", str(s.folder)) for s in run.stages if s.checkpoint]
            if (floor := self.floor_of(run)) is not None:
                choices.append((f"{run.name}/random init (floor)", floor))
        offered = {spec for _, spec in choices}
        return choices + [(spec, spec) for spec in extra if spec not in offered]

    @staticmethod
    def floor_of(run: Run) -> str | None:
        """The random floor of a run, as its scoreboard scores it: its first student stage's architecture at
        random init (None when no student stage has a checkpoint)."""
        students = {s.name for s in STAGES if s.model == "student"}
        return next((floor_spec(s.folder) for s in run.stages if s.name in students and s.checkpoint), None)

    def default_specs(self) -> list[str]:
        """The experts, and the first run's proxy and latest EUPE student when there are runs."""
        specs = list(EXPERTS)
        for run in self.runs()[:1]:
            stages = {s.name: s for s in run.stages if s.checkpoint}
            proxies = [s.name for s in STAGES if s.model == "proxy" and s.name in stages]
            students = [s.name for s in STAGES if s.model == "student" and s.name in stages]
            students.sort(
                key=lambda name: name != EUPE_STUDENT
            )  # the EUPE student first, else the others in order
            specs += [str(stages[name].folder) for name in (*proxies[:1], *students[:1])]
        return specs

    def warm_up(self, specs: list[str] | None = None, resolution: int = 224) -> None:
        """Load encoders and run each once on a generated scene (first passes are slow); no errors raised."""
        key = self.load_scene(0)
        for _ in self.feature_maps(key, specs if specs is not None else self.default_specs(), resolution):
            pass

    # images -------------------------------------------------------------------------------------------

    def add_image(self, image: Tensor) -> str:
        """Keep the centre square of an image [3, H, W] in [0, 1] at the display size, and the whole image
        with its aspect ratio at that square's area (for views that keep the aspect); returns its key."""
        return self.cache.add_image(square_view(image, self.display), native_view(image, self.display, 1))

    def load_file(self, path: str | Path) -> str:
        """`add_image` of an image file (see `open_image` for the errors)."""
        return self.add_image(open_image(path, self.max_pixels))

    def load_photo(self, name: str) -> str:
        """`add_image` of a bundled photograph."""
        return self.add_image(load_photo(name))

    def load_scene(self, seed: int) -> str:
        """`add_image` of the first generated scene of a seed (its labels kept for the Probes tab)."""
        scene = SceneGenerator(self.display, seed=int(seed)).batch(0, 1)
        key = self.add_image(scene.images[0])
        self.scenes.put(key, scene)
        return key

    def picture(
        self, key: str, point: tuple[float, float] | None = None, keep_aspect: bool = False
    ) -> np.ndarray:
        """The working image as uint8 [S, S, 3] (with `keep_aspect`, [H, W, 3] of its native-aspect copy),
        with a cross at `point` if given."""
        image = self.cache.image(key, keep_aspect)
        picture = to_picture(image, tuple(image.shape[-2:]))
        return mark_point(picture, point) if point is not None else picture

    # features -----------------------------------------------------------------------------------------

    def encoder_name(self, spec: str) -> str:
        """The display name of an encoder (loading it if needed)."""
        return self.cache.encoder(spec).name

    def each_features(
        self,
        key: str,
        specs: list[str],
        resolution: int,
        notes: list[str],
        layer: int | None = None,
        keep_aspect: bool = False,
    ) -> Iterator[tuple[str, EncoderFeatures]]:
        """(spec, features) of each encoder that loads (and, with `keep_aspect`, can keep the image's aspect
        ratio: an H x W grid); a note for each that cannot. At a chosen `layer` (see `Encoder.inside`) the
        patches are that layer's, and there are no expert-space estimates."""
        for spec in specs:
            try:
                features = self.cache.features(key, spec, resolution, keep_aspect)
                if layer is not None:
                    inner = self.cache.inside(key, spec, resolution, layer, keep_aspect).patches
                    features = replace(features, patches=inner, experts={})
            except ValueError as error:
                notes.append(str(error))
                continue
            yield spec, features

    def feature_maps(
        self,
        key: str,
        specs: list[str],
        resolution: int,
        space: str = OWN_SPACE,
        joint: bool = False,
        masked: bool = False,
        threshold: float = 0.0,
        layer: int | None = None,
        smooth: bool = False,
        keep_aspect: bool = False,
        centred: bool = False,
    ) -> Iterator[View]:
        """The image, then PCA-RGB maps of each encoder's patch features; yielded after each encoder.

        Colours are repeatable (see `PCABasis`): the same features, options and encoder give the same
        picture whatever else is shown, so adding an encoder or toggling an option back recolours nothing.

        Args:
            space: OWN_SPACE (each encoder's own features) or an expert's name: that expert's features
                next to every selected distilled encoder's estimate of them.
            joint: in an expert space, every panel in the expert's own basis; ignored in OWN_SPACE, where
                different encoders' features share no axes (each gets a basis of its own).
            masked, threshold: paint background patches black (see `foreground_mask`).
            layer: the layer whose patches are shown (None: the last; see `each_features`).
            smooth: bicubic upsampling of the maps instead of one block per patch.
            keep_aspect: the whole image with its aspect ratio (H x W patches) instead of its centre square.
            centred: remove each position's mean patch over the first POSITION_PHOTOS bundled photos before
                the PCA (see `position_mean`): what the image shows beyond what position alone explains.
        """
        if space != OWN_SPACE and space not in EXPERTS:
            raise ValueError(
                f"unknown feature space '{space}'; choose {OWN_SPACE} or one of {', '.join(EXPERTS)}"
            )
        joint = joint and space != OWN_SPACE
        notes: list[str] = []
        grids: dict[str, Tensor] = {}
        colours: dict[str, Tensor] = {}
        wanted = specs if space == OWN_SPACE else [space, *(s for s in specs if s != space)]
        size = tuple(self.cache.image(key, keep_aspect).shape[-2:])
        for spec, features in self.each_features(key, wanted, resolution, notes, layer, keep_aspect):
            named = self.grid_in_space(spec, features, space)
            if named is None:
                notes.append(f"{self.encoder_name(spec)} has no estimate of the {space} expert's features")
                continue
            name, grid = named
            if centred:
                grid = grid - self.position_mean(spec, resolution, space, layer, tuple(grid.shape[-2:]))
            grids[name] = grid
            reference = dict([next(iter(grids.items()))]) if joint else {}
            colours[name] = pca_colours(reference | {name: grid}, joint, masked, threshold)[name]
            panels = [
                Panel(
                    to_picture(upsample(colours[n], size, smooth), size),
                    f"{n} · {g.shape[-2]}x{g.shape[-1]} patches",
                )
                for n, g in grids.items()
            ]
            shown = View(
                [Panel(self.picture(key, keep_aspect=keep_aspect), "input"), *panels], notes=list(notes)
            )
            yield shown
        if not grids or len(shown.notes) < len(notes):  # notes on encoders after the last one shown
            panels = shown.panels if grids else [Panel(self.picture(key, keep_aspect=keep_aspect), "input")]
            yield View(panels, notes=notes or ["select at least one encoder"])

    def position_mean(
        self, spec: str, resolution: int, space: str, layer: int | None, grid: tuple[int, int]
    ) -> Tensor:
        """[1, D, *grid] mean patch at each position of an encoder's grid in a feature space, over the first
        POSITION_PHOTOS bundled photos (their centre squares), computed once per encoder, resolution,
        space and layer; resized bilinearly to `grid` where it differs (an image with its aspect kept)."""
        entry = (spec, resolution, space, layer)
        mean = self.position_means.get_or_make(entry, lambda: self.measure_position_mean(*entry))
        if tuple(mean.shape[-2:]) == grid:
            return mean
        return F.interpolate(mean, size=grid, mode="bilinear", align_corners=False)

    def measure_position_mean(self, spec: str, resolution: int, space: str, layer: int | None) -> Tensor:
        """See `position_mean`: one forward pass of the photos, under the encoder's lock."""
        if self.position_photos is None:
            names = photo_names()[:POSITION_PHOTOS]
            self.position_photos = torch.stack([square_view(load_photo(n), self.display) for n in names])
        with self.cache.using(spec) as slot:
            slot.encoder.resolution = resolution
            features = slot.encoder(self.position_photos, with_experts=True)
            if layer is not None:
                inner = slot.encoder.inside(self.position_photos, layer).patches
                features = replace(features, patches=inner, experts={})
        _, grids = self.grid_in_space(spec, features, space)
        return grids.float().mean(0, keepdim=True)

    def grid_in_space(self, spec: str, features: EncoderFeatures, space: str) -> tuple[str, Tensor] | None:
        """(panel title, patch grid) of an encoder in a feature space, or None if it cannot reach it."""
        name = self.encoder_name(spec)
        if space == OWN_SPACE:
            return name, features.patches
        if spec == space:
            return f"{name} (expert)", features.patches
        if space in features.experts:
            return f"{name} → {space}", features.experts[space].patches
        return None

    def similarity(
        self,
        key: str,
        specs: list[str],
        resolution: int,
        point: tuple[float, float],
        layer: int | None = None,
        smooth: bool = False,
        keep_aspect: bool = False,
    ) -> View:
        """Cosine similarity of every patch to the patch under `point` (x, y in [0, 1]), per encoder, at a
        chosen `layer` (None: the last), drawn blocky or `smooth` (bicubic), on the centre square or with
        `keep_aspect` the whole image.

        Each panel's colours span its own range, from its least similar patch (blue) to 1 (red): features
        of ReLU networks are all positive and their raw similarities crowd near 1.
        """
        view = View(notes=[f"similarity to the patch at ({point[0]:.2f}, {point[1]:.2f})"])
        image = self.cache.image(key, keep_aspect)
        for spec, features in self.each_features(key, specs, resolution, view.notes, layer, keep_aspect):
            values = cosine_similarity_map(features.patches, point)[0]
            low = float(values.min())
            shown = upsample(values, tuple(image.shape[-2:]), smooth)
            picture = mark_point(overlay(image, colorize(shown, vmin=min(low, 1 - 1e-6), vmax=1.0)), point)
            view.panels.append(Panel(picture, f"{self.encoder_name(spec)} · {low:.2f} to 1"))
        return view

    def teacher_student(self, key: str, spec: str, resolution: int) -> View:
        """A distilled encoder against each expert it reaches: per-patch agreement of its expert-space
        estimate with the expert's features, and the expert's head read on both (a classes reading,
        ImageNet top-5, as the table; map readings, e.g. edges and text, as panels)."""
        view = View()
        student = self.cache.features(key, spec, resolution)
        name = self.encoder_name(spec)
        experts = self.cache.encoder(spec).experts()
        if not experts:
            raise ValueError(f"{name} is not a distilled encoder: pick a proxy or a student")
        image = self.cache.image(key)
        size = (resolution, resolution)
        for expert, features in self.each_features(key, experts, resolution, view.notes):
            estimate = student.experts[expert]
            values = agreement_map(estimate.patches, features.patches)[0]
            view.panels.append(
                Panel(
                    overlay(image, colorize(values)), f"{expert} agreement · mean {float(values.mean()):.2f}"
                )
            )
            if expert not in registered_teachers():  # e.g. a timm teacher: no head to read with
                continue
            teacher = self.cache.encoder(expert).backbone
            own = expert_reading(expert, teacher, Features(features.summary, features.patches), size)[0]
            through = expert_reading(expert, teacher, estimate, size)[0]
            if expert_spec(expert).reading == "classes":
                view.table = [
                    [str(i + 1), a, b] for i, (a, b) in enumerate(zip(top5(own), top5(through), strict=True))
                ]
                continue
            for reading, title in ((own, f"{expert} · expert"), (through, f"{expert} · via {name}")):
                view.readings.append(Panel(to_picture(colorize(reading, "magma", 0, 1), self.display), title))
        return view

    def probes(self, key: str, spec: str, resolution: int) -> View:
        """Predictions of the dense probes an evaluation trained on this encoder's features; on a generated
        scene, each beside the scene's ground truth."""
        probes, board = find_probes(self.runs(), spec)
        name = self.encoder_name(spec)
        if board is None:
            runs = self.runs()
            run = Path(spec).parent if is_checkpoint(spec) else runs[0].folder if runs else Path("runs/NAME")
            command = f"eupe eval --runs {run} --out {run}/eval"
            return View(notes=[f"no trained probes for {name}: score it with `{command}`"])
        patches = self.cache.features(key, spec, resolution).patches
        trained_at = board.settings.get("resolution", "?")
        scene: SceneBatch | None = self.scenes.get(key)
        trained_on = PROBES_TRAINED_ON + (", like this one" if scene is not None else ON_A_PHOTO)
        view = View(
            notes=[f"probes of {name} from {board.folder} (trained at {trained_at} px); {trained_on}"]
        )
        for task, path in probes.items():
            try:
                prediction = load_probe(path).predict(patches, self.display)[0]
            except UNREADABLE_PROBE as error:
                view.notes.append(f"cannot use the {task} probe {path}: {str(error).splitlines()[0]}")
                continue
            colours, caption, legend = probe_picture(task, prediction)
            view.panels.append(Panel(to_picture(colours, self.display), caption))
            if scene is not None:
                truth, truth_caption, _ = probe_picture(task, getattr(scene, task)[0].float())
                view.panels.append(Panel(to_picture(truth, self.display), f"{truth_caption} · ground truth"))
            view.notes += [legend] if legend else []
        return view
