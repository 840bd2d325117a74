"""The bundled photos split into training and held-out photos: no training view crops a held-out photo, and
the agreement columns read crops of held-out photos only, unless the evaluation asks for the training photos
(to measure what was memorised)."""

import numpy as np
import pytest
from PIL import Image

import distill.data.photos as photos
from distill.data.photos import HELD_OUT_PHOTOS, photo_names
from distill.data.views import build_views
from workbench.eval.data import build_eval_data


@pytest.fixture
def loaded(monkeypatch):
    """The names of the photos decoded while the test runs (every reader goes through `photo_array`)."""
    names: list[str] = []
    original = photos.photo_array

    def recording(name: str):
        names.append(name)
        return original(name)

    monkeypatch.setattr(photos, "photo_array", recording)
    return names


def test_the_split_is_fixed_disjoint_complete_and_varied():
    train, held_out = set(photo_names("train")), set(photo_names("held_out"))
    assert held_out == set(HELD_OUT_PHOTOS) and len(held_out) >= 5
    assert not train & held_out and train | held_out == set(photo_names())
    # an animal, a person, an object, a scene and text, chosen before any measurement
    assert held_out == {"chelsea", "astronaut", "coffee", "china", "text"}
    with pytest.raises(ValueError, match="unknown photo split 'test'"):
        photo_names("test")


@pytest.mark.parametrize("source", ["photos", "mixed", "stamps"])
def test_no_training_view_crops_a_held_out_photo(loaded, source, tmp_path, monkeypatch):
    stamp = np.zeros((8, 8, 4), np.uint8)
    stamp[..., 3] = 255
    Image.fromarray(stamp).save(tmp_path / "black.png")
    monkeypatch.setenv("TUXPAINT_STAMPS_DIR", str(tmp_path))
    build_views(source, 40, 32, seed=3, mix={"scenes": 0.4, "photos": 0.3, "stamps": 0.3})
    assert loaded and set(loaded) <= set(photo_names("train"))


def test_the_agreement_crops_are_of_held_out_photos_only(loaded):
    data = build_eval_data(32, 4, 4, 4, 4, photos=12, seed=0, fashion_resolution=32, correspondence_pairs=2)
    assert data.photos.shape == (12, 3, 32, 32)
    assert set(loaded) == set(HELD_OUT_PHOTOS)


def test_the_training_photos_are_scored_only_when_asked(loaded):
    data = build_eval_data(
        32, 4, 4, 4, 4, photos=26, seed=0, fashion_resolution=32, correspondence_pairs=2, photo_split="train"
    )
    assert data.photos.shape == (26, 3, 32, 32)
    assert set(loaded) == set(photo_names("train"))
    with pytest.raises(ValueError, match="unknown photo split 'heldout'"):
        build_eval_data(32, 4, 4, 4, 4, 4, 0, 32, 2, photo_split="heldout")


def test_the_photo_split_is_a_scoring_option():
    import argparse

    from apps.cli.options import add_eval_settings, eval_settings

    parser = argparse.ArgumentParser()
    add_eval_settings(parser)
    assert eval_settings(parser.parse_args(["--photos", "8"])).photo_split == "held_out"
    settings = eval_settings(parser.parse_args(["--photo-split", "train", "--photos", "8"]))
    assert (settings.photo_split, settings.photos) == ("train", 8)
