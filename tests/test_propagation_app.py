"""The live demo's Segments (k-means) and Propagation tabs, through their callbacks on a tiny encoder."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch
from pictures import gallery_arrays
from PIL import Image

from apps.propagation_tab import GENERATED, UPLOADED, Propagate
from apps.segments_tab import Segments
from distill.config import ModelConfig
from distill.distilled_teacher import DistilledTeacher
from distill.models import DistilledModel
from workbench.eval.encoders import Encoder
from workbench.explore.encoder_cache import EncoderCache
from workbench.explore.explorer import Explorer
from workbench.explore.live import write_video
from workbench.explore.segments_view import kmeans_segments, matched

SIDE = 64  # display side and resolution: the tiny ViT gives a 4x4 grid


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    torch.manual_seed(0)
    config = ModelConfig(
        arch="vit_small_patch16_dinov3", kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2}
    )
    encoder = Encoder("tiny", "student", DistilledTeacher(DistilledModel(config, {}).eval(), SIDE))
    return Explorer(None, display=SIDE, cache=EncoderCache(build=lambda spec, resolution, **kwargs: encoder))


def test_kmeans_finds_planted_directions_largest_first_and_colours_match_by_overlap():
    directions = torch.eye(3)
    truth = torch.tensor([0] * 10 + [1] * 4 + [2] * 2).reshape(4, 4)  # sizes 10, 4, 2
    grid = (directions[truth] * 5 + 0.1 * torch.randn(4, 4, 3)).permute(2, 0, 1)
    assert torch.equal(kmeans_segments(grid, 3), truth)
    renamed = torch.tensor([2, 0, 1])[truth]
    assert torch.equal(matched(renamed, truth, 3), truth)
    with pytest.raises(ValueError, match="fewer patches than k = 16"):
        kmeans_segments(grid[:, :2], 16)


def test_segments_tab_shows_the_image_and_one_overlay_per_encoder(explorer):
    key = explorer.load_photo("chelsea")
    panels, shown = Segments(explorer).segments(key, ["tiny", "other"], SIDE, 3)
    panels = gallery_arrays(panels)
    assert [caption for _, caption in panels] == ["input", "tiny · 4x4 patches", "tiny · 4x4 patches"]
    assert all(picture.shape == (SIDE, SIDE, 3) for picture, _ in panels)
    assert np.array_equal(panels[1][0], panels[2][0])  # one encoder twice: the same colours
    assert "k = 3" in shown
    _, shown = Segments(explorer).segments(key, ["tiny"], 32, 5)  # a 2x2 grid
    assert "tiny: a 2x2 grid has fewer patches than k = 5" in shown  # a note, not an error
    with pytest.raises(gr.Error, match="load an image first"):
        Segments(explorer).segments(None, ["tiny"], SIDE, 3)


def test_propagation_of_a_generated_clip_plays_and_scores_each_encoder(explorer):
    calls = Propagate(explorer)
    steps = list(calls.run(["tiny"], SIDE, GENERATED, 0, 3, None, None, 3, 5, 7))
    gif, pictures, slider, last, notes = steps[-1]
    assert len(pictures) == 3 and slider["maximum"] == 2 and np.array_equal(last, pictures[2])
    assert pictures[0].shape[:2] == (SIDE, 3 * SIDE + 2 * 4)  # frame, truth, tiny
    assert notes.startswith("frame · truth · tiny") and "tiny: J " in notes and "J&F" in notes
    with Image.open(gif) as animation:
        assert animation.n_frames == 3
    assert np.array_equal(calls.frame(pictures, 1), pictures[1])
    assert calls.frame(None, 0) == gr.skip()


def test_propagation_of_an_upload_takes_a_mask_image_or_kmeans(explorer, tmp_path):
    calls = Propagate(explorer)
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    for frame in frames:
        frame[10:30, 20:40] = 255
    video = write_video(frames, tmp_path / "clip.gif", fps=5)
    mask = np.zeros((48, 64, 3), np.uint8)
    mask[10:30, 20:40] = (255, 0, 0)
    Image.fromarray(mask).save(tmp_path / "mask.png")
    *_, (_, pictures, _, _, notes) = calls.run(
        ["tiny"], SIDE, UPLOADED, 0, 3, str(video), str(tmp_path / "mask.png"), 3, 5, 7
    )
    assert len(pictures) == 3 and pictures[0].shape[1] == 2 * SIDE + 4 and "J " not in notes
    *_, (_, _, _, _, notes) = calls.run(["tiny"], SIDE, UPLOADED, 0, 3, str(video), None, 3, 5, 7)
    assert "k-means (k = 3) of tiny" in notes
    with pytest.raises(gr.Error, match="upload a video first"):
        list(calls.run(["tiny"], SIDE, UPLOADED, 0, 3, None, None, 3, 5, 7))
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(tmp_path / "black.png")
    with pytest.raises(gr.Error, match="name no object"):
        list(calls.run(["tiny"], SIDE, UPLOADED, 0, 3, str(video), str(tmp_path / "black.png"), 3, 5, 7))
