"""The scoreboard: every encoder of one or more runs (and the experts, and a random floor) through every
registered probe (`workbench.eval.probes`), with efficiency figures; written by `workbench.eval.report` as
JSON, a Markdown table and a bar chart.

Each encoder's row is saved as soon as it is scored (`workbench.eval.row_cache`), so an interrupted
evaluation resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from distill.errors import one_line
from distill.run_dir import RunDir, checkpoint_folder
from distill.stages import STAGE_NAMES, STAGES
from distill.teachers import EXPERTS
from workbench.bench.encoders import count_gflops
from workbench.eval.data import EvalData, build_eval_data
from workbench.eval.encoders import (
    FLOOR_PREFIX,
    Encoder,
    build_encoder,
    distilled_name,
    floor_spec,
    is_floor,
    random_encoder,
)
from workbench.eval.latency import measure_latency
from workbench.eval.probes import get_probe, registered_probes
from workbench.eval.probes.inputs import ExpertReferences, ProbeInputs
from workbench.eval.probes.saved import save_probe
from workbench.eval.row_cache import encoder_key, probe_folder, row_key, row_path, saved_row, write_json
from workbench.eval.settings import EvalSettings

EXPERT_ROLE = "expert"
FLOOR_ROLE = "random init (floor)"
OTHER_ROLE = "other"  # an extra encoder (`eupe eval --encoders`)


def eval_data(settings: EvalSettings) -> EvalData:
    """The evaluation sets the settings describe."""
    return build_eval_data(
        settings.resolution, settings.scene_train, settings.scene_test, settings.fashion_train,
        settings.fashion_test, settings.photos, settings.seed, settings.fashion_resolution,
        settings.correspondence_pairs, settings.photo_split,
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


def efficiency(encoder: Encoder, resolution: int, repeats: int) -> dict[str, float]:
    """Backbone parameters, GFLOPs per image and CPU latency (batch 1) at `resolution`: the columns of
    `workbench.eval.columns.EFFICIENCY`."""
    image = torch.rand(1, 3, resolution, resolution)
    return {
        "params_m": encoder.num_parameters() / 1e6,
        "gflops": count_gflops(encoder, image),
        "cpu_ms": measure_latency(encoder, image, repeats=repeats)["median_ms"],
    }


def score_encoder(
    encoder: Encoder,
    data: EvalData,
    settings: EvalSettings,
    references: ExpertReferences,
    probes: list[str] | None = None,
    probe_dir: Path | None = None,
    seconds: dict[str, float] | None = None,
) -> dict[str, float]:
    """Run the named probes (default: every registered one) on one encoder; trained dense probes go to
    `probe_dir`, and each probe's wall time (feature extraction included) to `seconds` when given."""
    inputs = ProbeInputs(encoder, data, settings.batch_size)
    scores = {}
    for name in tqdm(probes or registered_probes(), desc=f"{encoder.name}: probes", leave=False):
        start = time.perf_counter()
        result = get_probe(name).run(inputs, settings, references)
        if seconds is not None:
            seconds[name] = round(time.perf_counter() - start, 2)
        scores |= result.scores
        if result.probe is not None and probe_dir is not None:
            save_probe(result.probe, probe_dir / f"{name}.safetensors")
    return scores


def encoder_specs(
    runs: list[Path], experts: list[str] | None, extra: list[str] | None
) -> list[tuple[str, str]]:
    """(spec, role) of what `evaluate` scores: the experts, the runs' encoders, the extra encoders, then a
    random floor shaped as the first student."""
    specs = [(name, EXPERT_ROLE) for name in (experts if experts is not None else list(EXPERTS))]
    specs += run_encoder_specs(runs) + [(spec, OTHER_ROLE) for spec in extra or []]
    student_roles = {s.role for s in STAGES if s.model == "student"}  # the floor: a student, random
    floor_of = next((spec for spec, role in specs if role in student_roles), None)
    return specs + ([] if floor_of is None else [(floor_spec(floor_of), FLOOR_ROLE)])


def build_scored(spec: str, role: str, settings: EvalSettings) -> Encoder:
    """The encoder a scoreboard spec names: a random floor, an expert at its own resolution, or any other
    encoder at the evaluation's."""
    if is_floor(spec):
        return random_encoder(spec.removeprefix(FLOOR_PREFIX), settings.resolution, settings.seed)
    return build_encoder(spec, None if role == EXPERT_ROLE else settings.resolution)


def distilled_folder(spec: str) -> Path | None:
    """The checkpoint folder a spec names (None for an expert, a timm model or a random floor)."""
    return None if is_floor(spec) else checkpoint_folder(spec)


def row_name(spec: str) -> str:
    """A row's name before its encoder is built: a distilled folder's name, else the spec."""
    folder = distilled_folder(spec)
    return spec if folder is None else distilled_name(folder)


class Scorer:
    """Scores one encoder after another into an evaluation folder, reusing the rows it saved before.

    Args:
        out: the evaluation folder.
        settings: the evaluation settings.
        device: where features are extracted.
        log: told what happens to each encoder.
    """

    def __init__(
        self, out: Path, settings: EvalSettings, device: str | torch.device, log: Callable[[str], None]
    ) -> None:
        self.out, self.settings, self.device, self.log = out, settings, device, log
        self.data = eval_data(settings)
        self.references = ExpertReferences(list(EXPERTS), self.data.photos)

    def row(self, spec: str, role: str) -> dict:
        """The encoder's row: reused if saved under the same key (named as the spec names it now), else
        scored and saved."""
        encoder = encoder_key(spec)
        key = row_key(encoder, self.settings, self.data.fashion_train is not None)
        path = row_path(self.out, encoder)
        row = saved_row(path, key)
        if row is not None:
            row["spec"] = spec  # the same content, maybe under a new path
            if (folder := distilled_folder(spec)) is not None:
                row["name"] = distilled_name(folder)
            self.log(f"{spec}: reused {path}")
            return row
        model = build_scored(spec, role, self.settings)
        self.log(f"{spec}: scoring {model.name} ({role})")
        row = {
            "name": model.name,
            "role": role,
            "kind": model.kind,
            "spec": spec,
            "encoder": encoder,
            "key": key,
        }
        row |= efficiency(model, self.settings.resolution, self.settings.latency_repeats)
        model.to(self.device)
        row["probe_seconds"] = seconds = {}  # filled as the probes run; the scores follow it in the row
        probes = probe_folder(self.out, encoder)
        row |= score_encoder(
            model, self.data, self.settings, self.references, probe_dir=probes, seconds=seconds
        )
        self.log(f"{spec}: probe seconds " + ", ".join(f"{name} {s:.1f}" for name, s in seconds.items()))
        write_json(path, row)
        return row


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
    specs = encoder_specs([Path(r) for r in runs], experts, extra)
    scorer = Scorer(out, settings, device, log)
    rows = []
    for spec, role in specs:
        try:
            rows.append(scorer.row(spec, role))
        except Exception as error:  # recorded (not saved: a rerun retries it); the others are still scored
            rows.append({"name": row_name(spec), "role": role, "spec": spec, "failed": one_line(error)})
            log(f"{spec}: failed: {rows[-1]['failed']}")
    return rows
