"""Object views: cut-out stamps (RGBA PNGs) pasted by alpha over training-photo crops and dead leaves."""

import numpy as np
import pytest
import torch
from PIL import Image

from distill.data.stamps import LONG_SIDE, load_stamp, paste, stamp_files
from distill.data.views import available_mix, build_views


def write_stamp(path, rgb, size=(40, 20), alpha=255):
    """An RGBA PNG: a `size` (width, height) block of colour `rgb`, its right half transparent."""
    array = np.zeros((size[1], size[0], 4), np.uint8)
    array[..., :3] = rgb
    array[:, : size[0] // 2, 3] = alpha
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def stamps(tmp_path, monkeypatch):
    """A folder of three stamps in two categories (and a Tux Paint mirror variant), as the stamps folder."""
    write_stamp(tmp_path / "animals" / "red.png", (255, 0, 0))
    write_stamp(tmp_path / "animals" / "red_mirror.png", (255, 0, 0))
    write_stamp(tmp_path / "food" / "green.png", (0, 255, 0), size=(30, 30))
    write_stamp(tmp_path / "food" / "blue.png", (0, 0, 255), size=(10, 50))
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path))
    return tmp_path


def test_stamp_files_skip_mirrors_and_name_the_missing_package(stamps, tmp_path_factory, monkeypatch):
    assert [p.name for p in stamp_files()] == ["red.png", "blue.png", "green.png"]
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path_factory.mktemp("empty")))
    with pytest.raises(FileNotFoundError, match="apt-get install tuxpaint-stamps-default"):
        stamp_files()


def test_paste_composites_by_alpha_at_a_bounded_size(stamps):
    stamp = load_stamp(stamps / "animals" / "red.png")
    assert stamp.shape == (4, 20, 40) and stamp[3, :, :20].min() == 1 and stamp[3, :, 20:].max() == 0
    for seed in range(20):
        view = torch.full((3, 64, 64), 0.5)
        paste(view, stamp, torch.Generator().manual_seed(seed))
        changed = (view != 0.5).any(0)
        assert changed.any()
        # red over grey by the (resampled) alpha: red + green = 1, green = blue; mostly fully red
        red, green, blue = view[:, changed]
        assert torch.allclose(red + green, torch.ones_like(red), atol=1e-5) and torch.equal(green, blue)
        assert (red > 0.999).float().mean() > 0.5
        # only the opaque half: at most half as wide as the largest stamp, plus the resampling's edge
        columns = changed.any(0).nonzero()
        assert columns.max() - columns.min() + 1 <= LONG_SIDE[1] * 64 / 2 + 2
    clear = load_stamp(stamps / "animals" / "red.png")
    clear[3] = 0
    view = torch.full((3, 64, 64), 0.5)
    paste(view, clear, torch.Generator().manual_seed(0))
    assert (view == 0.5).all()


def test_stamp_views_are_deterministic_and_hold_stamps(stamps):
    views = build_views("stamps", 12, 48, seed=3)
    assert views.shape == (12, 3, 48, 48) and views.dtype == torch.uint8
    assert torch.equal(views, build_views("stamps", 12, 48, seed=3))
    assert not torch.equal(views, build_views("stamps", 12, 48, seed=4))
    pure = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    for view in views:  # every view shows at least one stamp's pure colour
        pixels = view.reshape(3, -1).T
        assert any((pixels == torch.tensor(c, dtype=torch.uint8)).all(1).sum() >= 4 for c in pure)


def test_a_mix_without_the_stamps_gives_their_share_to_scenes(tmp_path, monkeypatch):
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="tuxpaint-stamps-default"):
        assert available_mix({"scenes": 0.5, "leaves": 0.2, "stamps": 0.3}) == {"scenes": 0.8, "leaves": 0.2}
    with pytest.raises(FileNotFoundError, match="tuxpaint-stamps-default"):
        build_views("stamps", 2, 32)
