"""timm specs offline: `--weights` on every command that takes one, a fast one-line failure when the hub
cannot be reached, weights from the local cache, and `bench encoders` rows printed as they are measured."""

import time

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

from apps.cli import main
from distill.backbones import create_timm_backbone
from distill.hub import HubUnreachable

EUPE_T = "vit_tiny_patch16_dinov3_qkvb.eupe_lvd1689m"


@pytest.fixture
def no_hub(monkeypatch, tmp_path):
    """A hub that refuses connections (a closed local port) and an empty local cache."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    torch_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path / "hub"
    torch.hub.set_dir(torch_hub)


def test_pretrained_weights_fail_fast_in_one_line_naming_the_offline_choices(no_hub, tmp_path, capsys):
    start = time.monotonic()
    with pytest.raises(HubUnreachable, match=r"127\.0\.0\.1 is unreachable") as info:
        create_timm_backbone(EUPE_T, "pretrained")
    assert "--weights random" in str(info.value) and "--weights file" in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "timm:vit_tiny_patch16_dinov3_qkvb", "--out", str(tmp_path / "out")])
    assert time.monotonic() - start < 10  # timm's own hub download retried for about a minute
    line = str(exit_info.value)
    assert line.startswith("eupe: error: pretrained weights of") and "\n" not in line
    assert "--weights random" in line and not (tmp_path / "out").exists()


def test_cached_pretrained_weights_load_offline(no_hub):
    """Weights already downloaded are found in the hub's cache and loaded without a connection."""
    reference = create_timm_backbone(EUPE_T, "random")
    snapshot = no_hub / f"models--timm--{EUPE_T}" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (no_hub / f"models--timm--{EUPE_T}" / "refs").mkdir()
    (no_hub / f"models--timm--{EUPE_T}" / "refs" / "main").write_text("0123abc")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, snapshot / "model.safetensors")
    loaded = create_timm_backbone(EUPE_T, "pretrained")
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_hf_offline_mode_is_not_a_connection(no_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr("distill.hub.host_answers", lambda url: pytest.fail("no connection in offline mode"))
    with pytest.raises(HubUnreachable, match="offline mode is on"):
        create_timm_backbone("convnext_atto", "pretrained")


@pytest.mark.parametrize(
    ("command", "default"),
    [
        (["teachers", "show"], "pretrained"),
        (["probe", "scenes"], "pretrained"),
        (["export", "x"], "pretrained"),
        (["app"], "random"),
        (["bench", "encoders"], "random"),
        (["bench", "live"], "random"),
    ],
)
def test_every_command_taking_a_timm_spec_offers_weights_with_its_default(command, default, capsys):
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--weights {pretrained,random,file}" in text and f"(default: {default}" in text
    assert "--weights-file WEIGHTS_FILE" in text


def test_weights_file_needs_its_path(tmp_path):
    with pytest.raises(SystemExit, match="--weights file and --weights-file PATH go together"):
        main(["export", "timm:convnext_atto", "--weights", "file", "--out", str(tmp_path / "x")])


def test_bench_encoders_prints_each_row_as_measured(capsys):
    """The first encoder's row is out before the second fails to build."""
    argv = ["bench", "encoders", "--encoders", "timm:test_vit", "timm:no_such_model", "--resolution", "32"]
    with pytest.raises(SystemExit, match="unknown timm model 'no_such_model'"):
        main([*argv, "--repeats", "1", "--batch", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["encoder", "params"]
    assert lines[1].split()[0] == "timm:test_vit" and float(lines[1].split()[1]) > 0
