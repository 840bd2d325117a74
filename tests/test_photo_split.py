"""The bundled photos split into training and held-out photos: no training view crops a held-out photo, and
the agreement columns read crops of held-out photos only."""

import pytest

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


@pytest.mark.parametrize("source", ["photos", "mixed"])
def test_no_training_view_crops_a_held_out_photo(loaded, source):
    build_views(source, 40, 32, seed=3, mix={"scenes": 0.5, "photos": 0.5})
    assert loaded and set(loaded) <= set(photo_names("train"))


def test_the_agreement_crops_are_of_held_out_photos_only(loaded):
    data = build_eval_data(32, 4, 4, 4, 4, photos=12, seed=0, fashion_resolution=32, correspondence_pairs=2)
    assert data.photos.shape == (12, 3, 32, 32)
    assert set(loaded) == set(HELD_OUT_PHOTOS)
