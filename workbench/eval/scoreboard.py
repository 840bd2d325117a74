"""The scoreboard: every encoder of one or more runs (and the experts, and a random floor) through every
probe, with efficiency figures; written as JSON, a Markdown table and a bar chart.

Each encoder's row is saved as soon as it is scored, keyed by the encoder's files and the settings, so
an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm import tqdm

from distill.atomic import atomic_path
from distill.checkpoint import contiguous_state
from distill.data.scenes import SEGMENT_CLASSES
from distill.errors import one_line
from distill.features import Features
from distill.run_dir import RunDir, checkpoint_folder
from distill.stages import STAGE_NAMES, STAGES
from distill.teachers import EXPERTS, Teacher, build_teacher
from distill.teachers.registry import expert_spec
from workbench.bench.encoders import count_gflops
from workbench.eval.correspondence import keypoint_hits
from workbench.eval.data import EvalData, build_eval_data
from workbench.eval.encoders import (
    FLOOR_PREFIX,
    Encoder,
    EncoderFeatures,
    build_encoder,
    distilled_name,
    encoder_identity,
    floor_spec,
    is_floor,
    random_encoder,
)
from workbench.eval.expert_heads import expert_reading
from workbench.eval.latency import measure_latency
from workbench.eval.metrics import binary_f_score, mean_pearson
from workbench.eval.probes import (
    DenseProbe,
    evaluate_dense_probe,
    knn_classify,
    linear_classify,
    train_dense_probe,
)
from workbench.eval.settings import EvalSettings

EXPERT_ROLE = "expert"
FLOOR_ROLE = "random init (floor)"
OTHER_ROLE = "other"  # an extra encoder (`eupe eval --encoders`)


@dataclass
class Column:
    """A scoreboard column: result key, table title, and whether higher is better."""

    key: str
    title: str
    higher_is_better: bool = True


COLUMNS = (
    Column("fashion_knn20", "F-MNIST kNN-20"),
    Column("fashion_linear", "F-MNIST linear"),
    Column("scene_knn20", "Scenes kNN-20"),
    Column("scene_linear", "Scenes linear"),
    Column("seg_miou", "Seg mIoU"),
    Column("depth_rmse", "Depth RMSE", higher_is_better=False),
    Column("depth_delta1", "Depth δ<1.25"),
    Column("edges_f", "Edges F"),
    Column("text_f", "Text F"),
    Column("semantic_top1", "Sem. agree top-1"),
    Column("semantic_top5", "Sem. agree top-5"),
    Column("edges_agree_f", "Edges agree F"),
    Column("text_agree_f", "Text agree F"),
    Column("semantic_head_r", "Sem. head r"),
    Column("edges_head_r", "Edges head r"),
    Column("text_head_r", "Text head r"),
    Column("correspondence_pck10", "Corresp. PCK@0.1"),
)
EFFICIENCY = (("params_m", "Params (M)"), ("gflops", "GFLOPs"), ("cpu_ms", "CPU ms"))
DIGITS = {"params_m": 2, "gflops": 2, "cpu_ms": 1}  # decimals shown of the efficiency columns


def decimals(key: str) -> int:
    """Decimals a scoreboard value of `key` is shown with: an efficiency column's own, 3 for scores."""
    return DIGITS.get(key, 3)


def eval_data(settings: EvalSettings) -> EvalData:
    """The evaluation sets the settings describe."""
    return build_eval_data(
        settings.resolution, settings.scene_train, settings.scene_test, settings.fashion_train,
        settings.fashion_test, settings.photos, settings.seed, settings.fashion_resolution,
        settings.correspondence_pairs,
    )  # fmt: skip


def run_resolution(run: str | Path, default: int = 128) -> int:
    """The resolution a run's student trained at (its first student-stage side), else `default`."""
    path = RunDir(run).config
    if not path.is_file():
        return default
    configured = yaml.safe_load(path.read_text()).get("stages", {})
    for stage in STAGES:
        if stage.model == "student" and stage.name in configured:
            return int(configured[stage.name]["resolutions"][0])
    return default


def run_encoder_specs(runs: list[Path]) -> list[tuple[str, str]]:
    """(spec, role) of every distilled encoder in the runs, in pipeline order, then a random floor.

    Raises:
        FileNotFoundError: a run folder holds no checkpoints.
    """
    specs = []
    for run in map(RunDir, runs):
        found = [(str(run.stage(s.name)), s.role) for s in STAGES if run.has_checkpoint(s.name)]
        if not found:
            raise FileNotFoundError(
                f"{run.root} holds no stage checkpoints ({', '.join(STAGE_NAMES)}): is it a run folder?"
            )
        specs += found
    return specs


def extract(encoder: Encoder, images: Tensor, batch_size: int, with_experts: bool = False) -> EncoderFeatures:
    """Features of many images, in batches on the encoder's device, gathered on the CPU (patches as
    float16, to bound memory)."""
    parts = []
    for start in range(0, len(images), batch_size):
        out = encoder(images[start : start + batch_size], with_experts)
        experts = {n: Features(e.summary.cpu(), e.patches.cpu()) for n, e in out.experts.items()}
        parts.append(EncoderFeatures(out.summary.cpu(), out.patches.half().cpu(), experts))
    experts = {
        name: Features(
            *(torch.cat([getattr(p.experts[name], f) for p in parts]) for f in ("summary", "patches"))
        )
        for name in parts[0].experts
    }
    return EncoderFeatures(
        torch.cat([p.summary for p in parts]), torch.cat([p.patches for p in parts]), experts
    )


class ProbeInputs:
    """One encoder's features on the evaluation sets, extracted on first use and then reused.

    Args:
        encoder: the encoder.
        data: the evaluation sets.
        batch_size: images per forward pass.
    """

    def __init__(self, encoder: Encoder, data: EvalData, batch_size: int) -> None:
        self.encoder, self.data, self.batch_size = encoder, data, batch_size
        self.cache: dict[str, EncoderFeatures] = {}

    def features(self, split: str) -> EncoderFeatures:
        """Features of `scenes_train`, `scenes_test`, `fashion_train`, `fashion_test` or `photos`."""
        if split not in self.cache:
            images = getattr(self.data, split)
            images = images if isinstance(images, Tensor) else images.images
            self.cache[split] = extract(self.encoder, images, self.batch_size, with_experts=split == "photos")
        return self.cache[split]


class ExpertReferences:
    """The experts, and their own readings of the photo crops (built on first use, once per evaluation)."""

    def __init__(self, names: list[str], photos: Tensor) -> None:
        self.names, self.photos = [n for n in names if n in EXPERTS], photos
        self.experts: dict[str, Teacher] = {}
        self.readings: dict[str, Tensor] = {}

    def ready(self) -> ExpertReferences:
        """Build the experts and read the photos, if not yet done."""
        if not self.experts:
            size = tuple(self.photos.shape[-2:])
            self.experts = {name: build_teacher(name) for name in self.names}
            self.readings = {n: expert_reading(n, e, e(self.photos), size) for n, e in self.experts.items()}
        return self

    def read(self, features: dict[str, Features]) -> dict[str, Tensor]:
        """Each expert's head applied to an encoder's estimate of that expert's features."""
        size = tuple(self.photos.shape[-2:])
        return {
            n: expert_reading(n, e, features[n], size)
            for n, e in self.ready().experts.items()
            if n in features
        }


@dataclass
class ProbeResult:
    """Scores of one probe, and the dense probe it trained (None for the others)."""

    scores: dict[str, float]
    probe: DenseProbe | None = None


def classification_probe(prefix: str) -> Callable[..., ProbeResult]:
    """kNN (k = 10, 20; T = 0.07) and linear-probe accuracy on summary vectors of `scene` or `fashion`."""

    dataset = "scenes" if prefix == "scene" else "fashion"

    def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
        splits = [getattr(inputs.data, f"{dataset}_{part}") for part in ("train", "test")]
        if splits[0] is None:  # Fashion-MNIST not installed
            return ProbeResult({})
        labels = [s.scene_class if dataset == "scenes" else s.labels for s in splits]
        train, test = (inputs.features(f"{dataset}_{part}").summary for part in ("train", "test"))
        knn = knn_classify(train, labels[0], test, labels[1], ks=(10, 20), temperature=0.07)
        scores = {f"{prefix}_knn{k}": accuracy for k, accuracy in knn.items()}
        scores[f"{prefix}_linear"] = linear_classify(train, labels[0], test, labels[1], seed=settings.seed)
        return ProbeResult(scores)

    return run


# probe -> (probe task, scene label field, F-score tolerance, {probe result key: scoreboard key})
DENSE_TASKS = {
    "segmentation": (
        "segmentation",
        "segmentation",
        0,
        {"miou": "seg_miou", "pixel_accuracy": "seg_pixel_accuracy"},
    ),
    "depth": (
        "depth",
        "depth",
        0,
        {"rmse": "depth_rmse", "absrel": "depth_absrel", "delta1": "depth_delta1"},
    ),
    "edges": ("binary", "edges", 1, {"f": "edges_f"}),
    "text": ("binary", "text", 0, {"f": "text_f"}),
}


def cap_grid(patches: Tensor, side: int) -> Tensor:
    """Area-pool a patch grid whose sides exceed `side` (e.g. CRAFT's stride-2 grid) to at most `side`."""
    if max(patches.shape[-2:]) <= side:
        return patches
    size = (min(side, patches.shape[-2]), min(side, patches.shape[-1]))
    return F.adaptive_avg_pool2d(patches.float(), size).half()


def dense_probe(name: str) -> Callable[..., ProbeResult]:
    """A linear probe on patch grids (BatchNorm + 1x1 conv), trained and scored on generated scenes."""
    task, field_name, tolerance, keys = DENSE_TASKS[name]

    def run(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
        train_labels = getattr(inputs.data.scenes_train, field_name)
        test_labels = getattr(inputs.data.scenes_test, field_name)
        train_patches, test_patches = (
            cap_grid(inputs.features(split).patches, settings.max_grid)
            for split in ("scenes_train", "scenes_test")
        )
        probe = train_dense_probe(
            task,
            train_patches,
            train_labels,
            len(SEGMENT_CLASSES) if task == "segmentation" else None,
            steps=settings.probe_steps,
            seed=settings.seed,
        )
        scores = evaluate_dense_probe(probe, test_patches, test_labels, tolerance)
        return ProbeResult({key: scores[k] for k, key in keys.items()}, probe)

    return run


def agreement_probe(inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences) -> ProbeResult:
    """How well an encoder's expert-space outputs, read by each expert's head, agree with the expert.

    On crops of the held-out photos, by the kind of each expert's reading. Classes (semantic):
    `<name>_top1`, the agreement on the class, and `<name>_top5`, the expert's class among the encoder's
    top 5. Maps (edges, text): `<name>_agree_f`, the F-score of the encoder's map against the expert's own
    map thresholded at 0.5 (best threshold over the set for the encoder's map). Every expert:
    `<name>_head_r`, the real-photo fidelity: the mean over crops of the Pearson correlation between the
    expert's head on the encoder's estimate and on the expert's own features (of the log-probabilities,
    i.e. the logits, for classes; of the maps, for maps).
    """
    if not inputs.encoder.experts():
        return ProbeResult({})
    readings = references.read(inputs.features("photos").experts)
    scores = {}
    for name, reading in readings.items():
        expected = references.readings[name]
        if expert_spec(name).reading == "classes":
            logits, expert_logits = (p.clamp_min(1e-30).log() for p in (reading, expected))  # up to a shift
            scores[f"{name}_head_r"] = mean_pearson(logits, expert_logits)
            expert_class = expected.argmax(-1)
            top5 = reading.topk(5, dim=-1).indices
            scores[f"{name}_top1"] = (top5[:, 0] == expert_class).float().mean().item()
            scores[f"{name}_top5"] = (top5 == expert_class[:, None]).any(-1).float().mean().item()
        else:
            scores[f"{name}_head_r"] = mean_pearson(reading, expected)
            if (expected > 0.5).any():  # F is undefined where the expert fires nowhere
                scores[f"{name}_agree_f"] = binary_f_score(reading, expected > 0.5)["f"]
    return ProbeResult(scores)


def first_patches(inputs: ProbeInputs, split: str, count: int) -> Tensor:
    """Patch grids of the first `count` images of a split: sliced from the split's features where another
    probe extracted them already, else extracted for those images alone."""
    if split in inputs.cache:
        return inputs.cache[split].patches[:count]
    images = getattr(inputs.data, split)
    images = images if isinstance(images, Tensor) else images.images
    return extract(inputs.encoder, images[:count], inputs.batch_size).patches


def correspondence_probe(
    inputs: ProbeInputs, settings: EvalSettings, references: ExpertReferences
) -> ProbeResult:
    """PCK@0.1 of nearest-neighbour patch matching between test scenes or photo crops and warped copies
    (see `workbench.eval.correspondence`): `correspondence_pck10` over every keypoint, and per source."""
    hits = {}
    for split, label in (("scene_pairs", "scenes"), ("photo_pairs", "photos")):
        pairs = getattr(inputs.data, split)
        if len(pairs):
            grids_a = first_patches(inputs, pairs.source, len(pairs))
            hits[label] = keypoint_hits(grids_a, inputs.features(split).patches, pairs)
    scores = {f"correspondence_pck10_{label}": h.float().mean().item() for label, h in hits.items() if len(h)}
    if scores:
        scores["correspondence_pck10"] = torch.cat(list(hits.values())).float().mean().item()
    return ProbeResult(scores)


PROBES: dict[str, Callable[[ProbeInputs, EvalSettings, ExpertReferences], ProbeResult]] = {
    "fashion": classification_probe("fashion"),
    "scenes": classification_probe("scene"),
    **{name: dense_probe(name) for name in DENSE_TASKS},
    "agreement": agreement_probe,
    "correspondence": correspondence_probe,
}


def efficiency(encoder: Encoder, resolution: int, repeats: int) -> dict[str, float]:
    """Backbone parameters, GFLOPs per image and CPU latency (batch 1) at `resolution`."""
    image = torch.rand(1, 3, resolution, resolution)
    return {
        "params_m": encoder.num_parameters() / 1e6,
        "gflops": count_gflops(encoder, image),
        "cpu_ms": measure_latency(encoder, image, repeats=repeats)["median_ms"],
    }


def save_probe(probe: DenseProbe, path: Path) -> None:
    """Save a trained dense probe (weights and constructor arguments) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(
            contiguous_state(probe.state_dict()), str(tmp), metadata={"config": json.dumps(probe.config)}
        )


def load_probe(path: str | Path) -> DenseProbe:
    """A dense probe saved by `save_probe`, in eval mode."""
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    probe = DenseProbe(**config)
    probe.load_state_dict(load_file(str(path)))
    return probe.eval()


def score_encoder(
    encoder: Encoder,
    data: EvalData,
    settings: EvalSettings,
    references: ExpertReferences,
    probes: list[str] | None = None,
    probe_dir: Path | None = None,
) -> dict[str, float]:
    """Run the named probes (default: all) on one encoder; trained dense probes go to `probe_dir`."""
    inputs = ProbeInputs(encoder, data, settings.batch_size)
    scores = {}
    for name in tqdm(probes or list(PROBES), desc=f"{encoder.name}: probes", leave=False):
        result = PROBES[name](inputs, settings, references)
        scores |= result.scores
        if result.probe is not None and probe_dir is not None:
            save_probe(result.probe, probe_dir / f"{name}.safetensors")
    return scores


def json_digest(value: object) -> str:
    """16 hex digits of the SHA-256 of a JSON-able value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def encoder_key(spec: str) -> str:
    """What names a scored encoder's row and probes in an evaluation folder, from its content (see
    `encoder_identity`), so a run folder can move, or be named by another path, and keep its rows.
    A `random:<spec>` floor is keyed apart from the checkpoint whose architecture it takes."""
    identity = encoder_identity(spec.removeprefix(FLOOR_PREFIX))
    return json_digest(identity | {"random": True} if is_floor(spec) else identity)


def row_path(out: Path, key: str) -> Path:
    """Where `evaluate` saves the row of the encoder with `encoder_key` `key`."""
    return out / "rows" / f"{key}.json"


def probe_folder(out: Path, key: str) -> Path:
    """Where `evaluate` saves the dense probes trained on the encoder with `encoder_key` `key`."""
    return out / "probes" / key


def write_json(path: Path, value: object) -> None:
    """Write JSON atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=2))


def evaluate(
    runs: list[Path],
    out: Path,
    settings: EvalSettings,
    experts: list[str] | None = None,
    extra: list[str] | None = None,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
) -> list[dict]:
    """Score the experts, every encoder of the runs, extra encoders (timm names, folders) and a random floor.

    Features are extracted on `device`; probes train, and efficiency is measured, on the CPU.

    Returns:
        One row per encoder: name, role, kind, spec, scores and efficiency figures; an encoder that could not
        be built or scored has a row of name, role, spec and `failed` (the reason, one line), and the others
        are still scored.
    """
    runs = [Path(r) for r in runs]
    specs = [(name, EXPERT_ROLE) for name in (experts if experts is not None else list(EXPERTS))]
    specs += run_encoder_specs(runs) + [(spec, OTHER_ROLE) for spec in extra or []]
    student_roles = {s.role for s in STAGES if s.model == "student"}  # the floor: a student, random
    floor_of = next((spec for spec, role in specs if role in student_roles), None)
    if floor_of is not None:
        specs.append((floor_spec(floor_of), FLOOR_ROLE))
    data = eval_data(settings)
    references = ExpertReferences(list(EXPERTS), data.photos)

    def scored_row(spec: str, role: str) -> dict:
        floor = is_floor(spec)
        encoder = encoder_key(spec)
        # a row is redone when the settings change, or when it was scored without Fashion-MNIST
        key = json_digest({"encoder": encoder, "fashion": data.fashion_train is not None, **asdict(settings)})
        path = row_path(out, encoder)
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            row = json.loads(path.read_text()) | {"spec": spec}  # the same content, maybe under a new path
            if not floor and (folder := checkpoint_folder(spec)) is not None:
                row["name"] = distilled_name(folder)
            log(f"{spec}: reused {path}")
            return row
        if floor:
            model = random_encoder(spec.removeprefix(FLOOR_PREFIX), settings.resolution, settings.seed)
        else:
            model = build_encoder(spec, None if role == EXPERT_ROLE else settings.resolution)
        log(f"{spec}: scoring {model.name} ({role})")
        row = {
            "name": model.name,
            "role": role,
            "kind": model.kind,
            "spec": spec,
            "encoder": encoder,
            "key": key,
        }
        row |= efficiency(model, settings.resolution, settings.latency_repeats)
        model.to(device)
        row |= score_encoder(model, data, settings, references, probe_dir=probe_folder(out, encoder))
        write_json(path, row)
        return row

    rows = []
    for spec, role in specs:
        try:
            rows.append(scored_row(spec, role))
        except Exception as error:  # recorded (not saved: a rerun retries it); the others are still scored
            folder = None if is_floor(spec) else checkpoint_folder(spec)
            name = spec if folder is None else distilled_name(folder)
            rows.append({"name": name, "role": role, "spec": spec, "failed": one_line(error)})
            log(f"{spec}: failed: {rows[-1]['failed']}")
    return rows
