"""Live PCA: a basis fitted once and frozen, fps and dropped-frame accounting, real-time playback of a video
file, GIF export, and `eupe bench live`."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from apps.cli import main
from distill.config import ModelConfig
from distill.data.scenes import SceneGenerator
from distill.distilled_teacher import DistilledTeacher
from distill.models import DistilledModel
from workbench.bench.live import bench_live, format_live_bench
from workbench.eval.encoders import Encoder
from workbench.eval.latency import busy_core
from workbench.explore.live import (
    FrameStats,
    LivePCA,
    export_video,
    has_ffmpeg,
    play,
    video_frames,
    write_video,
)

RES = 64


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    torch.manual_seed(0)
    kwargs = {"embed_dim": 32, "depth": 1, "num_heads": 2}
    config = ModelConfig(arch="vit_small_patch16_dinov3", kwargs=kwargs)
    return Encoder("tiny", "student", DistilledTeacher(DistilledModel(config, {}).eval(), RES))


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Three different camera-like frames (wider than tall), uint8 HxWx3."""
    scenes = SceneGenerator(RES, seed=3).batch(0, 3).images
    return [torch.cat([s, s.flip(-1)], -1).mul(255).byte().permute(1, 2, 0).numpy() for s in scenes]


def patch_mean(live: LivePCA, frame: np.ndarray) -> torch.Tensor:
    """The mean patch feature of a frame: the centre of a basis fitted on it (float64, as the basis)."""
    return live.patches(frame).double().mean((0, 2, 3))


def test_basis_is_fitted_on_the_first_frame_and_then_frozen(encoder, frames):
    live = LivePCA(encoder, RES, side=32)
    first = live.picture(frames[0])
    basis = live.basis
    assert torch.allclose(basis.mean, patch_mean(live, frames[0]), atol=1e-5)
    for frame in frames[1:]:
        live.picture(frame)
    assert live.basis is basis
    assert np.array_equal(live.picture(frames[0]), first)  # the same frame, the same colours
    assert first.shape == (32, 32, 3) and first.dtype == np.uint8
    other = LivePCA(encoder, RES, side=32)
    other.fit(frames[1])  # a chosen reference: its basis, and other colours for the same frame
    assert torch.allclose(other.basis.mean, patch_mean(live, frames[1]), atol=1e-5)
    assert not torch.allclose(other.basis.mean, basis.mean, atol=1e-3)
    assert not np.array_equal(other.picture(frames[0]), first)


def test_show_puts_the_frame_beside_its_map_and_counts_it(encoder, frames):
    live = LivePCA(encoder, RES, side=32)
    shown = live.show(frames[0])
    assert shown.shape == (32, 64, 3)
    assert np.array_equal(shown[:, 32:], live.picture(frames[0]))
    assert live.stats.shown == 1 and live.stats.seconds_per_frame > 0


def test_frame_stats_fps_and_camera_frames_dropped_while_busy():
    stats = FrameStats(interval=0.1, window=3)
    stats.record(0.0, 0.05)  # faster than the camera: nothing dropped
    assert (stats.shown, stats.dropped) == (1, 0)
    assert stats.fps == pytest.approx(20.0)  # one frame: from its processing time
    stats.record(0.1, 0.35)  # busy for 2.5 camera intervals: two frames dropped
    assert (stats.shown, stats.dropped) == (2, 2)
    assert stats.fps == pytest.approx(1 / 0.3)
    assert stats.seconds_per_frame == pytest.approx(0.15)
    for start in (0.4, 0.5, 0.6):
        stats.record(start, start + 0.05)
    assert stats.fps == pytest.approx(2 / 0.2)  # the last three frames only
    stats.record(5.0, 5.05, skipped=4)  # after a pause the window starts afresh; a player's skips add up
    assert stats.fps == pytest.approx(20.0) and stats.dropped == 6 and stats.shown == 6
    assert re.fullmatch(r"20\.0 fps · 50 ms per frame · 6 dropped", stats.text())


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_playback_skips_late_frames_instead_of_queueing_them():
    clock = FakeClock()
    shown = []
    for frame, skipped in play(range(10), fps=10, clock=clock, sleep=clock.sleep):
        shown.append((frame, skipped))
        clock.now += 0.25  # the encoder takes 2.5 frame intervals
    assert shown == [(0, 0), (2, 1), (5, 2), (7, 1)]  # 8 and 9 were late too: skipped at the end
    assert clock.slept == []


def test_playback_of_a_fast_consumer_keeps_the_video_rate():
    clock = FakeClock()
    shown = [frame for frame, skipped in play(range(5), fps=10, clock=clock, sleep=clock.sleep)]
    assert shown == list(range(5))
    assert clock.now == pytest.approx(0.4) and len(clock.slept) == 4
    with pytest.raises(ValueError, match="fps must be positive"):
        next(play(range(3), fps=0))


def test_video_file_to_gif_of_pca_maps_round_trip(encoder, frames, tmp_path):
    source = write_video(frames * 2, tmp_path / "clip.gif", fps=20)
    read, fps = video_frames(source)
    read = list(read)
    assert len(read) == 6 and fps == pytest.approx(20) and read[0].shape == frames[0].shape
    live = LivePCA(encoder, RES, side=48)
    out = export_video(live, source, tmp_path / "clip_pca.gif", max_frames=5)
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (48, 48)
    assert live.basis is not None


def test_video_file_to_mp4_of_pca_maps_round_trip(encoder, frames, tmp_path):
    assert has_ffmpeg(), "PyAV (av, in the apps extra) reads and writes MP4"
    source = write_video(frames * 2, tmp_path / "clip.mp4", fps=20)
    read, fps = video_frames(source)
    read = list(read)
    assert len(read) == 6 and fps == pytest.approx(20) and read[0].shape == frames[0].shape
    out = export_video(LivePCA(encoder, RES, side=48), source, tmp_path / "clip_pca.mp4", max_frames=5)
    read, _ = video_frames(out)
    assert [f.shape for f in read] == [(48, 48, 3)] * 5


def test_unreadable_video_and_unknown_formats_are_one_line_errors(tmp_path):
    bad = tmp_path / "notes.gif"
    bad.write_text("not a video")
    with pytest.raises(ValueError, match=r"cannot read notes\.gif as a video"):
        video_frames(bad)
    picture = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"export as \.gif or \.mp4"):
        write_video([picture], tmp_path / "x.avi", fps=5)
    with pytest.raises(ValueError, match="no frames"):
        write_video([], tmp_path / "x.gif", fps=5)


def test_bench_live_rows_and_table(encoder):
    rows = bench_live({"tiny": encoder}, RES, warmup=1, repeats=3)
    (row,) = rows
    assert row.name == "tiny" and row.grid == "4x4"
    assert row.fps == pytest.approx(1e3 / row.median_ms) and row.p90_ms >= row.median_ms > 0
    assert row.threads == torch.get_num_threads() and not row.loaded
    loaded = bench_live({"tiny": encoder}, RES, warmup=1, repeats=3, threads=1, loaded=True)
    table = format_live_bench(rows + loaded, RES).splitlines()
    assert table[0].startswith(f"live PCA at {RES} px")
    assert re.fullmatch(rf"tiny\s+4x4\s+{row.threads}\s+none\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d", table[2])
    assert re.fullmatch(r"tiny\s+4x4\s+1\s+1 busy core\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d", table[3])


def test_a_busy_core_is_a_spinning_process_while_the_block_runs():
    with busy_core() as process:
        time.sleep(0.3)
        ticks = int(Path(f"/proc/{process.pid}/stat").read_text().split(")")[1].split()[11])  # utime
        assert process.poll() is None and ticks > 0
    assert process.returncode is not None  # ended with the block


def test_eupe_bench_live_prints_fps_per_encoder(tiny_run, capsys):
    main(["bench", "live", "--encoders", "--runs", str(tiny_run), "--resolution", "64", "--warmup", "1",
          "--repeats", "2", "--threads", "1", "2", "--load"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("live PCA at 64 px") and lines[-1].startswith("the live demo (eupe app) runs")
    rows = [line.split() for line in lines[2:-1]]
    stages = [f"run/{stage}" for stage in ("proxy", "student", "multires", "direct")]
    settings = [("1", "none"), ("1", "1"), ("2", "none"), ("2", "1")]  # threads, alone or beside a busy core
    assert [(row[0], row[2], row[3]) for row in rows] == [(n, *s) for s in settings for n in stages]
    assert all(float(row[-1]) > 0 for row in rows)


def test_app_callbacks_keep_one_session_until_a_choice_changes(encoder, frames, tmp_path):
    from apps.live_tab import CURRENT_IMAGE, FIRST_FRAME, Live
    from workbench.explore.encoder_cache import EncoderCache
    from workbench.explore.explorer import Explorer

    explorer = Explorer(None, cache=EncoderCache(build=lambda spec, resolution, **kwargs: encoder))
    calls = Live(explorer)
    shown, text, state = calls.camera(frames[0], "tiny", RES, FIRST_FRAME, None, 0, None)
    assert shown.shape[1] == 2 * shown.shape[0] and text.endswith("dropped")
    basis = state.live.basis
    _, _, same = calls.camera(frames[1], "tiny", RES, FIRST_FRAME, None, 0, state)
    assert same is state and same.live.basis is basis and same.live.stats.shown == 2
    _, _, refitted = calls.camera(frames[1], "tiny", RES, FIRST_FRAME, None, 1, state)  # *Refit basis*
    assert refitted is not state
    assert torch.allclose(refitted.live.basis.mean, patch_mean(state.live, frames[1]), atol=1e-5)
    key = explorer.add_image(torch.rand(3, RES, RES))
    _, _, on_image = calls.camera(frames[0], "tiny", RES, CURRENT_IMAGE, key, 1, refitted)
    image_mean = state.live.patches(explorer.cache.image(key)).double().mean((0, 2, 3))
    assert torch.allclose(on_image.live.basis.mean, image_mean, atol=1e-5)
    clip = write_video(frames, tmp_path / "clip.gif", fps=100)
    played = list(calls.play_video(str(clip), "tiny", RES, FIRST_FRAME, None))
    assert 1 <= len(played) <= 3 and all(text.endswith("video at 100.0 fps") for _, text in played)
    exported = calls.export(str(clip), "tiny", RES, FIRST_FRAME, None, "gif")
    with Image.open(exported) as gif:
        assert gif.n_frames == 3
