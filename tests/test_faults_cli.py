"""The `eupe` command under bad input: one `eupe: error:` line per failure (a traceback with `--debug`), a
config checked in full before the run folder is written, `1e-3` read as a number, and `eupe eval` past a
damaged encoder."""

from __future__ import annotations

import pickle
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from apps.cli import hoisted_overrides, main
from distill.config import ConfigError, load_config
from distill.data.stream import StreamingImages, stream_loader
from distill.errors import one_line
from distill.run_dir import MODEL_FILE, RunDir
from distill.teachers import build_teacher
from distill.trainer import NonFiniteLoss

ONE_TEACHER = """
teachers: [{name: edges}]
proxy: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 1, num_heads: 2}, adaptor_hidden: 16}
student: {arch: vit_small_patch16_dinov3, kwargs: {embed_dim: 32, depth: 1, num_heads: 2}, adaptor_hidden: 16}
data: {source: scenes, num_images: 8}
stages:
  proxy: {steps: 1, batch_size: 4, lr: 1e-3, resolutions: [32]}
norm: {warmup_batches: 1}
"""


def error_line(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """The one line `eupe` exits with (argparse's usage errors print it; the rest exit with it)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    code = info.value.code  # main exits with the line as its message (Python prints it); argparse with 2
    line = code if isinstance(code, str) else capsys.readouterr().err.strip()
    assert code not in (0, None)
    assert line.startswith("eupe: error: ") and "\n" not in line, line
    return line


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY_RUN))
    return path


@pytest.fixture
def one_teacher(tmp_path: Path) -> Path:
    """A config whose data (8 generated scenes at 32 px) is quick to make."""
    path = tmp_path / "one.yaml"
    path.write_text(textwrap.dedent(ONE_TEACHER))
    return path


def written(folder: Path) -> list[Path]:
    """Everything a failed command left in the test's folder besides the config."""
    return sorted(p for p in folder.rglob("*") if p.suffix != ".yaml")


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("train.log_every=0", "'train.log_every' must be positive, got 0"),
        ("train.checkpoint_every=0", "'train.checkpoint_every' must be positive, got 0"),
        ("stages.proxy.resolutions=[60]", "[60] are not multiples of vit_small_patch16_dinov3's stride 16"),
        ("stages.proxy.lr=1e-3x", "'stages.proxy.lr' must be float, got '1e-3x'"),
        ("stages.proxy.warmup_steps=-1", "'stages.proxy.warmup_steps' must be >= 0"),
        ("proxy.arch=no_such_net", "config key 'proxy': timm cannot build no_such_net"),
        ("train.device=gpu", "train.device must be auto, cpu, cuda or cuda:<index>, got 'gpu'"),
        ("train.nosuch=1", "unknown config key 'train.nosuch'"),
        ("stages.proxy.lr=.nan", "'stages.proxy.lr' must be a finite number, got nan"),
        ("loss.alpha=.inf", "'loss.alpha' must be a finite number, got inf"),
        ("stages.direct.weight_decay=-.inf", "'stages.direct.weight_decay' must be a finite number, got -in"),
        ("teachers=[{name: edges, patch_weight: -1}]", "'teachers[0].patch_weight' must be >= 0, got -1.0"),
        ("stages.student.batch_size=25", "'stages.student.batch_size' (25) exceeds the 24 fixed views"),
        ("data.seed=-1", "'data.seed' must be >= 0, got -1"),
    ],
)
def test_a_bad_config_is_one_line_and_writes_nothing(override, named, tiny_config, capsys):
    out = tiny_config.parent / "run"
    line = error_line(["pipeline", "--config", str(tiny_config), "--out", str(out), override], capsys)
    assert named in line
    assert written(tiny_config.parent) == []  # no config.yaml, statistics or feature cache


def test_a_yaml_alias_bomb_is_refused_in_one_line_before_the_run_folder(tiny_config, capsys):
    levels = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}], " for i in range(1, 10))
    bomb = f"kwargs: {{l0: &l0 [lol], {levels}embed_dim: 48,"  # 9 ** 9 copies of 'lol' under a model's kwargs
    tiny_config.write_text(tiny_config.read_text().replace("kwargs: {embed_dim: 48,", bomb))
    with pytest.raises(ConfigError, match=r"YAML aliases expand the config to [\d,]+ values"):
        load_config(tiny_config)  # the node graph is measured; nothing is expanded
    out = tiny_config.parent / "run"
    line = error_line(["pipeline", "--config", str(tiny_config), "--out", str(out)], capsys)
    assert "(at most 100,000); write the values out" in line and written(tiny_config.parent) == []
    tiny_config.write_text("teachers: &t [{name: edges, extra: *t}]\n")
    with pytest.raises(ConfigError, match="refers to a node that contains it"):
        load_config(tiny_config)
    with pytest.raises(ConfigError, match=r"override 'proxy\.kwargs=\{a: &a \[\*a\]\}': a YAML alias refers"):
        load_config("tiny", ["proxy.kwargs={a: &a [*a]}"])


def test_a_batch_that_does_not_split_over_the_processes_writes_nothing(tiny_config, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # as torchrun sets it; the check joins no process group
    argv = ["pipeline", "--config", str(tiny_config), "--out", str(tiny_config.parent / "run")]
    assert "stages.proxy.batch_size 8 does not split over 3 processes" in error_line(argv, capsys)
    assert written(tiny_config.parent) == []


def test_a_check_that_needs_the_views_still_comes_before_any_write(one_teacher, capsys):
    argv = ["pipeline", "--config", str(one_teacher), "--out", str(one_teacher.parent / "run")]
    assert "augment.min_crop_cells must lie in [1, 1]" in error_line([*argv, "augment.crop=1"], capsys)
    assert written(one_teacher.parent) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_up_front(tiny_config, capsys):
    argv = ["pipeline", "--config", str(tiny_config), "--out", str(tiny_config.parent / "run")]
    line = error_line([*argv, "train.device=cuda"], capsys)
    assert line == "eupe: error: train.device=cuda but torch sees no CUDA device"
    assert written(tiny_config.parent) == []


def test_debug_shows_the_traceback_instead_wherever_it_is(tiny_config):
    argv = ["pipeline", "--config", str(tiny_config), "--out", str(tiny_config.parent / "run")]
    assert hoisted_overrides(["pipeline", "--debug", "a.b=1", "--", "--debug"]) == [
        "--debug", "pipeline", "a.b=1", "--", "--debug"
    ]  # fmt: skip
    with pytest.raises(ConfigError, match=r"train\.log_every"):
        main([*argv, "train.log_every=0", "--debug"])
    with pytest.raises(ConfigError, match=r"train\.log_every"):
        main(["--debug", *argv, "--stages", "proxy", "train.log_every=0"])


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    path = tmp_path / "e.yaml"
    path.write_text(textwrap.dedent(ONE_TEACHER).replace("steps: 1,", "steps: 1e1,"))
    config = load_config(path, ["stages.proxy.weight_decay=5E-2", "loss.alpha=.5e+0", "train.grad_clip=2e0"])
    proxy = config.stages["proxy"]
    assert (proxy.lr, proxy.weight_decay, config.loss.alpha, config.train.grad_clip) == (1e-3, 0.05, 0.5, 2.0)
    assert proxy.steps == 10 and isinstance(proxy.steps, int)
    with pytest.raises(ConfigError, match=r"'stages\.proxy\.steps' must be int, got 10\.5"):
        load_config(path, ["stages.proxy.steps=1.05e1"])


def test_outs_of_the_wrong_kind_are_refused_before_any_work(tiny_config, tiny_run, capsys):
    folder = tiny_config.parent
    (folder / "a_file").write_text("x")
    (folder / "a_folder").mkdir()
    for argv, named in (
        (["pipeline", "--config", str(tiny_config), "--out", str(folder / "a_file")], "is a file, not a run"),
        (["teachers", "show", "--out", str(folder / "a_folder")], "is a folder, not a file"),
        (["eval", "--runs", str(tiny_run), "--out", str(folder / "a_file")], "is a file, not a folder"),
        (["eval", "--runs", str(tiny_run), "--out", str(folder / "a_file" / "x")], "a_file is a file"),
    ):
        assert named in error_line(argv, capsys)
    assert not (tiny_run / "eval").exists()


def test_usage_errors_and_failures_inside_a_stage_are_one_line(tiny_config, capsys, monkeypatch):
    assert "invalid choice: 'nope'" in error_line(["distill", "--config", "x", "--stage", "nope"], capsys)
    assert "unrecognized arguments: --bogus" in error_line(["teachers", "list", "--bogus"], capsys)

    def diverge(*args: object) -> None:
        raise NonFiniteLoss("proxy: loss became nan/inf at step 3;\nno finite checkpoint to keep")

    monkeypatch.setattr("distill.pipeline.run_stages", diverge)
    argv = ["pipeline", "--config", str(tiny_config), "--out", str(tiny_config.parent / "run")]
    line = error_line(argv, capsys)
    assert "proxy: loss became nan/inf at step 3; no finite checkpoint to keep" in line


def test_a_missing_checkpoint_is_named_not_called_an_unknown_teacher(tiny_config, capsys):
    student = tiny_config.parent / "runs" / "gone" / "student"
    named = f"no distilled checkpoint at {student} (no model.safetensors in it or in its checkpoint/)"
    assert named in error_line(["export", str(student), "--out", str(tiny_config.parent / "x")], capsys)
    with pytest.raises(FileNotFoundError, match="no distilled checkpoint at gone/proxy/checkpoint"):
        build_teacher("gone/proxy/checkpoint")
    argv = ["pipeline", "--config", str(tiny_config), "--out", str(tiny_config.parent / "run")]
    line = error_line([*argv, f"teachers=[{{name: {student}}}]"], capsys)
    assert f"config key 'teachers[0].name': {named}" in line and written(tiny_config.parent) == []


def test_a_dataloader_workers_error_keeps_its_own_type_and_message_in_full(tmp_path):
    folder = tmp_path / ("a-long-folder-name-" * 12)
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.png").write_bytes(b"not a png")
    dataset = StreamingImages(f"folder:{folder}", 16, global_batch=2, seed=0)
    with pytest.raises(RuntimeError) as info:
        next(iter(stream_loader(dataset, 0, 1, workers=1)))
    assert "Original Traceback" in str(info.value)  # torch re-raises it with the worker's traceback
    assert one_line(info.value) == (
        f"RuntimeError: 64 consecutive unreadable images in folder:{folder} (last: {folder / '2.png'}) "
        "(in DataLoader worker process 0)"
    )


def test_a_pickle_given_as_weights_is_one_line_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    weights = tmp_path / "weights.pth"
    weights.write_bytes(pickle.dumps({"w": Payload()}))
    argv = ["export", "timm:vit_tiny_patch16_224", "--weights", "file", "--weights-file", str(weights)]
    line = error_line([*argv, "--out", str(tmp_path / "exported")], capsys)
    assert f"{weights} cannot be loaded as timm:vit_tiny_patch16_224 weights" in line
    assert not marker.exists() and not (tmp_path / "exported").exists()


def test_a_failed_validation_leaves_the_folder_free_for_the_corrected_run(one_teacher, capsys):
    run = one_teacher.parent / "runs" / "run"
    argv = ["pipeline", "--config", str(one_teacher), "--out", str(run)]
    assert "[40] are not multiples" in error_line([*argv, "stages.proxy.resolutions=[40]"], capsys)
    assert not (one_teacher.parent / "runs").exists()
    main(argv)  # the corrected run, into the same folder
    assert RunDir(run).has_checkpoint("proxy") and "proxy" in capsys.readouterr().out


@pytest.mark.slow  # scores the proxy through every probe: ~30 s on 2 idle cores, minutes when loaded
def test_eval_scores_past_a_damaged_encoder_and_names_it(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("multires", "direct", "eval"))
    damaged = RunDir(run).checkpoint("student") / MODEL_FILE
    damaged.write_bytes(damaged.read_bytes()[:100])
    out = tmp_path / "board"
    settings = ["--resolution", "64", "--scene-train", "24", "--scene-test", "16", "--fashion-train", "40",
                "--fashion-test", "20", "--photos", "2", "--probe-steps", "2", "--latency-repeats", "1",
                "--correspondence-pairs", "2"]  # fmt: skip
    line = error_line(["eval", "--runs", str(run), "--out", str(out), "--experts", *settings], capsys)
    assert line.startswith("eupe: error: ") and "run/student (" in line and "run/proxy" not in line
    board = (out / "scoreboard.json").read_text()
    assert '"failed"' in board and '"scene_knn20"' in board  # the failure recorded, the proxy scored
    assert len(list((out / "rows").glob("*.json"))) == 1  # only the proxy's row is kept for reuse


def test_every_reader_of_a_checkpoint_checks_its_manifest(tiny_run, tmp_path, capsys):
    from workbench.eval.encoders import build_encoder

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("multires", "direct", "eval"))
    damaged = RunDir(run).checkpoint("student") / MODEL_FILE
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0x40  # one bit of the last weight: the file still parses
    damaged.write_bytes(bytes(data))
    named = f"{damaged} is damaged: its content differs from when it was saved"
    out = tmp_path / "exported"
    assert error_line(["export", str(run / "student"), "--out", str(out)], capsys) == f"eupe: error: {named}"
    assert not out.exists()
    with pytest.raises(ValueError, match="is damaged: its content differs"):  # what `eupe eval` records
        build_encoder(str(run / "student"))
