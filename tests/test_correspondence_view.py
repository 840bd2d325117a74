"""The live demo's correspondence view and tab: matches of a clicked point, mutual-match lines, warps."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest
import torch

from apps.correspondence_tab import PHOTO, UPLOAD, WARP, Correspondence
from workbench.eval.matching import patch_centres
from workbench.explore.correspondence_view import CLICKED, add_warped, coarse, correspondence, point_in_b
from workbench.explore.explorer import Explorer

SIDE = 64  # display and encoder resolution; the edges expert gives an 8x8 grid


@pytest.fixture(scope="module")
def explorer() -> Explorer:
    return Explorer(None, display=SIDE)


@pytest.fixture(scope="module")
def key(explorer) -> str:
    return explorer.load_photo("chelsea")


def cross_centre(picture: np.ndarray) -> tuple[float, float]:
    """The normalised (x, y) of the centre of the CLICKED-coloured cross in a picture."""
    ys, xs = np.nonzero((picture == CLICKED).all(-1))
    return (float(np.median(xs)) + 0.5) / picture.shape[1], (float(np.median(ys)) + 0.5) / picture.shape[0]


def test_an_image_matched_with_itself_marks_the_clicked_patch(explorer, key):
    point = (0.3, 0.6)
    view = correspondence(explorer, key, key, ["edges", "timm:test_vit"], SIDE, point)
    assert [panel.caption for panel in view.panels] == ["edges", "timm:test_vit"]
    centre = (2.5 / 8, 4.5 / 8)  # the centre of the 8x8 grid's patch under (0.3, 0.6)
    assert view.notes[1] == f"edges: (0.30, 0.60) → ({centre[0]:.2f}, {centre[1]:.2f})"
    picture = view.panels[0].image
    assert picture.shape == (SIDE, SIDE, 3)
    assert cross_centre(picture) == pytest.approx(centre, abs=1.5 / SIDE)


def test_mutual_matches_of_an_image_with_itself_are_horizontal_lines(explorer, key):
    view = correspondence(explorer, key, key, ["edges"], SIDE, (0.3, 0.6), lines=True)
    (panel,) = view.panels
    gap = panel.image.shape[1] - 2 * SIDE
    assert panel.image.shape == (SIDE, 2 * SIDE + gap, 3) and gap > 0
    # every patch is its own mutual neighbour: 40 lines (the limit) from A straight across to B
    assert view.notes[1].endswith("· 40 mutual matches drawn")
    between = panel.image[:, SIDE : SIDE + gap]
    drawn_rows = {int(y) for y in np.nonzero((between != 255).any(-1).all(-1))[0]}
    centre_rows = {int(c * (SIDE - 1)) for c in patch_centres(8, 8)[:, 1].unique().tolist()}
    assert drawn_rows and all(min(abs(r - c) for c in centre_rows) <= 2 for r in drawn_rows)
    clicked_row = round(4.5 / 8 * (SIDE - 1))  # the clicked match, in green on top
    assert tuple(between[clicked_row, gap // 2]) == CLICKED


def test_a_warped_copy_knows_where_each_point_lands(explorer):
    image = torch.zeros(3, SIDE, SIDE)
    image[:, 26:30, 34:38] = 1.0  # a bright square around (0.56, 0.44)
    key = explorer.add_image(image)
    key_b, warp = add_warped(explorer, key, seed=3)
    warped = explorer.cache.image(key_b)[0]
    ys, xs = torch.nonzero(warped > 0.5, as_tuple=True)
    seen = ((float(xs.float().mean()) + 0.5) / SIDE, (float(ys.float().mean()) + 0.5) / SIDE)
    assert point_in_b(warp, (36 / SIDE, 28 / SIDE)) == pytest.approx(seen, abs=1.5 / SIDE)
    shifted_away = torch.tensor([[1.0, 0.0, 5.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert point_in_b(shifted_away, (0.5, 0.5)) is None  # it leaves B


def test_fine_grids_are_pooled_for_mutual_matching():
    grid = torch.randn(4, 112, 112)
    pooled = coarse(grid, 32 * 32)
    assert pooled.shape == (4, 28, 28)
    torch.testing.assert_close(pooled[:, 0, 0], grid[:, :4, :4].mean((1, 2)))
    assert coarse(grid[:, :8, :8]) is not None and coarse(grid[:, :8, :8]).shape == (4, 8, 8)


def test_tab_callbacks_match_in_a_warp_a_photo_and_an_upload(explorer, key, tmp_path):
    calls = Correspondence(explorer)
    picture, panels, notes = calls.matches(key, ["edges"], SIDE, (0.5, 0.5), WARP, 3, "coffee", None, False)
    assert tuple(picture[SIDE // 2, SIDE // 2]) == CLICKED and [c for _, c in panels] == ["edges"]
    assert "white cross: where it truly is" in notes and "of the side" in notes
    point, _, _, notes = calls.click(
        key,
        ["edges"],
        SIDE,
        PHOTO,
        0,
        "coffee",
        None,
        True,
        gr.SelectData(None, {"index": [16, 48], "value": None}),
    )
    assert point == (0.25, 0.75) and "edges: (0.25, 0.75) → " in notes and "mutual matches drawn" in notes
    with pytest.raises(gr.Error, match="upload an image B first"):
        calls.matches(key, ["edges"], SIDE, (0.5, 0.5), UPLOAD, 0, "coffee", None, False)
    with pytest.raises(gr.Error, match="load an image first"):
        calls.matches(None, ["edges"], SIDE, (0.5, 0.5), WARP, 0, "coffee", None, False)
