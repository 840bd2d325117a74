"""`eupe export --format timm`: a folder plain timm loads (no import of this project), heads that give the
project's expert estimates, and a round trip through `build_encoder`."""

import json
import os
import subprocess
import sys
import textwrap

import torch

from distill.backbones import split_features
from workbench.eval.encoders import build_encoder
from workbench.eval.scoreboard import EXPERT_ROLE, FLOOR_ROLE, encoder_key
from workbench.export.heads import HEADS_FILE, load_expert_heads
from workbench.export.timm_folder import export_timm

PLAIN_TIMM = """
import sys, timm, torch
model = timm.create_model("local-dir:{folder}", pretrained=True).eval()
config = timm.data.resolve_data_config(model=model)
mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
with torch.no_grad():
    x = (torch.load("{images}") - mean) / std
    tokens, pooled = model.forward_features(x), model(x)
torch.save((tokens, pooled), "{tokens}")
project = [m for m in sys.modules if m.split(".")[0] in ("distill", "workbench", "apps")]
assert not project, project
"""


def test_a_timm_export_loads_in_plain_timm_and_its_heads_give_the_expert_estimates(tiny_run, tmp_path):
    spec = str(tiny_run / "multires")
    encoder = build_encoder(spec, 64)
    folder = export_timm(spec, encoder, tmp_path / "student", 64)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", HEADS_FILE, "README.md"}
    mask = os.umask(0o022)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in folder.iterdir()} == {0o666 & ~mask}  # readable by all
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.save(images, tmp_path / "images.pt")
    script = PLAIN_TIMM.format(folder=folder, images=tmp_path / "images.pt", tokens=tmp_path / "tokens.pt")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, pooled = torch.load(tmp_path / "tokens.pt")
    own = encoder(images, with_experts=True)
    backbone = encoder.backbone.model.backbone
    plain = split_features(backbone, tokens, (4, 4))
    torch.testing.assert_close(pooled, own.summary, rtol=1e-6, atol=1e-6)  # model(x): the CLS summary
    torch.testing.assert_close(plain.summary, own.summary, rtol=1e-6, atol=1e-6)  # float32 rounding
    torch.testing.assert_close(plain.patches, own.patches, rtol=1e-6, atol=1e-6)

    heads = load_expert_heads(folder)
    estimates = heads(backbone, tokens, (4, 4))
    assert sorted(estimates) == sorted(own.experts) == ["edges", "semantic", "text"]  # through the proxy
    for name, estimate in estimates.items():
        torch.testing.assert_close(estimate.summary, own.experts[name].summary, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(estimate.patches, own.experts[name].patches, rtol=1e-5, atol=1e-5)

    again = build_encoder(str(folder), 64)(images, with_experts=True)
    torch.testing.assert_close(again.patches, own.patches, rtol=0, atol=0)
    for name in own.experts:
        torch.testing.assert_close(again.experts[name].patches, own.experts[name].patches, rtol=0, atol=0)


def test_a_timm_encoder_exports_and_round_trips_without_heads(tmp_path):
    spec = "timm:convnext_atto"
    encoder = build_encoder(spec, 64, weights="random")
    folder = export_timm(spec, encoder, tmp_path / "cnx", 64)
    assert not (folder / HEADS_FILE).exists() and "## Loading" in (folder / "README.md").read_text()
    images = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(build_encoder(str(folder), 64)(images).patches, encoder(images).patches)


def test_the_card_says_how_to_get_the_summary_lists_each_stage_once_and_quotes_the_references(
    tiny_run, tmp_path
):
    spec = str(tiny_run / "multires")
    board = tmp_path / "scoreboard.json"
    rows = [
        {"name": "run/multires", "role": "multires", "encoder": encoder_key(spec), "scene_knn20": 0.5},
        {"name": "random vit", "role": FLOOR_ROLE, "scene_knn20": 0.1, "seg_miou": 0.05},
        {"name": "semantic", "role": EXPERT_ROLE, "scene_knn20": 0.9},
        {"name": "text", "role": EXPERT_ROLE, "failed": "could not build"},
    ]
    board.write_text(json.dumps({"rows": rows, "settings": {"resolution": 64}}))
    folder = export_timm(spec, build_encoder(spec, 64), tmp_path / "student", 64, board)
    card = (folder / "README.md").read_text().splitlines()
    assert any(line.startswith("`model(x)`") and "CLS token" in line for line in card[:6])
    stages = [line.split("`")[1] for line in card if line.startswith("  - `")]
    assert stages == ["proxy", "student", "multires"]  # each once, in training order
    assert "| probe | this model | random floor | expert `semantic` |" in card
    assert "| Scenes kNN-20 | 0.500 | 0.100 | 0.900 |" in card
