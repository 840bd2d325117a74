"""The model card (`README.md`) of an exported encoder, generated from its run: architecture, size, the
training recipe, its scoreboard row with the settings it was scored under, the teachers' licences, and
how to load it."""

from __future__ import annotations

import json
from pathlib import Path

import timm
import torch
import yaml

from distill.backbones import prefix_tokens, uses_cls_token
from distill.checkpoint import read_meta
from distill.run_dir import checkpoint_folder, stage_of_checkpoint
from distill.specs import parse_spec
from distill.stages import STAGE_NAMES, stage_named
from distill.teachers.registry import expert_spec
from workbench.bench.encoders import count_gflops
from workbench.eval.encoders import Encoder
from workbench.eval.normalised import NORMALISED
from workbench.eval.probes import probe_columns
from workbench.eval.report import cell
from workbench.eval.row_cache import encoder_key
from workbench.eval.scoreboard import EXPERT_ROLE, FLOOR_ROLE


def teacher_licence(name: str, weights: str = "pretrained") -> str:
    """The licence of an expert's or a timm teacher's weights, as their registry or timm records it."""
    spec = parse_spec(name)
    if spec.kind == "expert":
        return expert_spec(name).licence
    if weights == "random":
        return "random weights (no licence applies)"
    try:
        licence = timm.models.get_pretrained_cfg(spec.timm_model).to_dict().get("license")
    except (RuntimeError, AttributeError):  # not a timm model (a checkpoint folder), or no pretrained config
        licence = None
    return licence or "not recorded by timm"


def scoreboard_row(scoreboard: Path, spec: str) -> tuple[dict, dict] | None:
    """The row of the encoder `spec` names in a scoreboard.json (matched by content), and its settings."""
    if not scoreboard.is_file():
        return None
    board = json.loads(scoreboard.read_text())
    key = encoder_key(spec)
    row = next((r for r in board["rows"] if r.get("encoder") == key), None)
    return None if row is None else (row, board["settings"])


def output_lines(encoder: Encoder) -> list[str]:
    """What the model returns: `model(x)` is the summary the scoreboard scores, and where the patches are."""
    model = encoder.timm_model
    if model is not None and uses_cls_token(model):
        summary = "the final-normed CLS token"
        patches = (
            f"`model.forward_features(x)[:, {prefix_tokens(model)}:]` (after the CLS and register tokens)"
        )
    else:
        summary, patches = (
            "the pooled final feature map",
            "`model.forward_features(x)` (the final feature map)",
        )
    return [f"`model(x)` (x normalised as below) returns its summary vector, {summary}: the one the "
            f"workbench scores. Its patch features: {patches}."]  # fmt: skip


def architecture_lines(encoder: Encoder, resolution: int) -> list[str]:
    """Architecture, parameters and GFLOPs at `resolution`."""
    model_config = getattr(getattr(encoder.backbone, "model", None), "model_config", None)
    arch = f"`{model_config.arch}` {model_config.kwargs}" if model_config else f"`{encoder.name}`"
    images = torch.rand(1, 3, resolution, resolution)
    return [
        f"- Architecture: timm {arch}, patch stride {encoder.patch_stride}, width {encoder.patch_dim}",
        f"- Parameters: {encoder.num_parameters() / 1e6:.2f} M (backbone; the heads add "
        f"{(encoder.num_parameters(with_adaptors=True) - encoder.num_parameters()) / 1e6:.2f} M)",
        f"- GFLOPs at {resolution} px: {count_gflops(encoder.backbone, images):.3g}",
    ]


def stage_chain(stage: str) -> list[str]:
    """The stages `stage` was built from (those it reads, theirs, ...) and itself, each once, in training
    order."""
    upstream, todo = {stage}, [stage]
    while todo:
        for name in stage_named(todo.pop()).reads:
            if name not in upstream:
                upstream.add(name)
                todo.append(name)
    return [name for name in STAGE_NAMES if name in upstream]


def recipe_lines(checkpoint: Path) -> list[str]:
    """The run's config as it bears on this stage: the stages it went through, teachers, data, steps."""
    run, stage = stage_of_checkpoint(checkpoint)
    if stage not in STAGE_NAMES or not run.config.is_file():
        return ["- Trained outside a run folder: no recipe recorded."]
    config = yaml.safe_load(run.config.read_text())
    lines = [f"- Run `{run.root}`, stage `{stage}` at step {read_meta(checkpoint)['step']}"]
    for name in stage_chain(stage):
        cfg = config["stages"][name]
        spec = stage_named(name)
        lines.append(f"  - `{name}`: the {spec.model} taught by {spec.taught_by}, {cfg['steps']} steps "
                     f"of batch {cfg['batch_size']}, lr {cfg['lr']}, sides {cfg['resolutions']}")  # fmt: skip
    teachers = ", ".join(f"`{t['name']}`" for t in config["teachers"])
    data = config["data"]
    size = "streamed" if data.get("stream") else f"{data['num_images']} fixed views"
    lines += [f"- Teachers (experts): {teachers}", f"- Data: `{data['source']}`, {size}, seed {data['seed']}",
              f"- Loss: {config['loss']}; standardisation: {config['norm']['method']}"]  # fmt: skip
    return lines


def references(scoreboard: Path) -> dict[str, dict]:
    """The rows a model's scores are read against: the random floor's and each expert's, by table name."""
    rows = json.loads(scoreboard.read_text())["rows"]
    scored = [r for r in rows if "failed" not in r]
    floor = next((r for r in scored if r.get("role") == FLOOR_ROLE), None)  # one per scoreboard
    experts = {f"expert `{r['name']}`": r for r in scored if r.get("role") == EXPERT_ROLE}
    return ({} if floor is None else {"random floor": floor}) | experts


def score_lines(scored: tuple[dict, dict] | None, scoreboard: Path) -> list[str]:
    """The scoreboard row as a table beside the random floor's and the experts' rows, with the settings
    they were scored under."""
    if scored is None:
        return [f"Not scored ({scoreboard} holds no row of it): `eupe eval --runs RUN` scores it."]
    row, settings = scored
    others = references(scoreboard)
    header = "| probe | this model | " + " | ".join(others) + " |"
    lines = [f"From `{scoreboard}` ({', '.join(f'{k}={v}' for k, v in settings.items())}):", "",
             header, "|---" * (len(others) + 2) + "|"]  # fmt: skip
    for column in (*probe_columns(), NORMALISED):
        if column.key in row:
            cells = [cell(row[column.key]), *(cell(other.get(column.key)) for other in others.values())]
            lines.append(f"| {column.title} | " + " | ".join(cells) + " |")
    return lines


def licence_lines(checkpoint: Path | None) -> list[str]:
    """The licences of the teachers whose knowledge the encoder carries."""
    if checkpoint is None:
        return ["- The weights' own licence (see timm's model card)."]
    run, _ = stage_of_checkpoint(checkpoint)
    if not run.config.is_file():
        return ["- Unknown: the checkpoint lies outside a run folder."]
    teachers = yaml.safe_load(run.config.read_text())["teachers"]
    return [f"- `{t['name']}`: {teacher_licence(t['name'], t['weights'])}" for t in teachers] + [
        "- Distillation carries each teacher's knowledge: check each licence before you share the weights."
    ]


TIMM_LOADING = """```python
import timm

model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()
config = timm.data.resolve_data_config(model=model)  # mean, std, input size
```"""
HEADS_LOADING = """Each expert's estimate (the heads need this project, `pip install eupe-workbench`):

```python
from workbench.export.heads import load_expert_heads

heads = load_expert_heads("PATH/TO/THIS/FOLDER")
x = (images - mean) / std  # images in [0, 1]; mean, std from config above
estimates = heads(model, model.forward_features(x), (x.shape[-2] // {stride}, x.shape[-1] // {stride}))
```

Or the whole encoder, as the workbench uses it: `build_encoder("PATH/TO/THIS/FOLDER")`
(`workbench.eval.encoders`)."""


def loading_lines(heads: bool, stride: int) -> list[str]:
    """How to load the folder with plain timm (and the heads with this project)."""
    return [TIMM_LOADING, "", HEADS_LOADING.format(stride=stride)] if heads else [TIMM_LOADING]


def model_card(spec: str, encoder: Encoder, resolution: int, scoreboard: Path | None, heads: bool) -> str:
    """The Markdown model card of the encoder `spec` names.

    Args:
        spec: what was exported (a run stage or checkpoint folder, or a timm name).
        encoder: the encoder it built.
        resolution: the side its GFLOPs are counted at.
        scoreboard: the scoreboard.json to quote (default: the run's `eval/scoreboard.json`).
        heads: whether the export holds the expert heads.
    """
    checkpoint = checkpoint_folder(spec)
    if scoreboard is None and checkpoint is not None:
        scoreboard = stage_of_checkpoint(checkpoint)[0].eval / "scoreboard.json"
    sections = [f"# {encoder.name}", "", "A vision encoder exported by the EUPE workbench.", "",
                *output_lines(encoder), "",
                "## Architecture", *architecture_lines(encoder, resolution), ""]  # fmt: skip
    if checkpoint is not None:
        sections += ["## Training recipe", *recipe_lines(checkpoint), ""]
    if scoreboard is not None:
        sections += ["## Scoreboard", *score_lines(scoreboard_row(scoreboard, spec), scoreboard), ""]
    sections += [
        "## Licences",
        *licence_lines(checkpoint),
        "",
        "## Loading",
        *loading_lines(heads, encoder.patch_stride),
        "",
    ]
    return "\n".join(sections)
