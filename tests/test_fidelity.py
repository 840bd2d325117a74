"""Label-free fidelity (workbench.eval.fidelity) against hand-computed values."""

import pytest
import torch

from distill.features import Features
from workbench.eval.encoders import EncoderFeatures
from workbench.eval.fidelity import encoder_fidelity, fidelity_scores, grid_cka, rankme


def grid(generator, dim=16, batch=5, side=20):
    return torch.randn(batch, dim, side, side, generator=generator)


def test_cka_of_a_grid_with_itself_its_rotation_and_its_scaling_is_one():
    g = torch.Generator().manual_seed(0)
    x = grid(g)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    rotated = torch.einsum("ed,bdhw->behw", rotation, x)
    assert grid_cka(x, x) == pytest.approx(1, abs=1e-12)
    assert grid_cka(x, rotated) == pytest.approx(1, abs=1e-12)
    assert grid_cka(x, 3.5 * rotated) == pytest.approx(1, abs=1e-12)
    assert grid_cka(x, x[:, :8]) < 0.9  # half the dimensions is not the same representation


def test_cka_with_independent_noise_is_near_zero():
    # N = 2000 patches, D1 = D2 = 16: for independent Gaussian rows ||Y'X||^2 ~ N D1 D2 and
    # ||X'X|| ~ N sqrt(D1), so CKA ~ sqrt(D1 D2) / N = 0.008; 0.05 is six times that.
    g = torch.Generator().manual_seed(1)
    assert grid_cka(grid(g), grid(g)) < 0.05


def test_rankme_of_a_rank_k_matrix_with_equal_singular_values_is_k():
    g = torch.Generator().manual_seed(2)
    for k in (1, 3, 7):
        u, _ = torch.linalg.qr(torch.randn(50, k, generator=g))
        v, _ = torch.linalg.qr(torch.randn(12, k, generator=g))
        assert rankme(2.0 * u @ v.T) == pytest.approx(k, rel=1e-4)
    assert rankme(torch.randn(400, 12, generator=g)) == pytest.approx(12, rel=0.05)  # nearly flat spectrum


def test_fidelity_scores_of_an_exact_estimate():
    g = torch.Generator().manual_seed(3)
    features, target = grid(g, dim=8, side=4), grid(g, dim=6, side=8)
    estimate = Features(torch.zeros(5, 6), 2 * target)  # cosine of x with 2x is 1
    scores = fidelity_scores(target, {"edges": estimate}, {"edges": Features(torch.zeros(5, 6), target)})
    assert scores["edges_cos"] == pytest.approx(1, abs=1e-6)
    assert scores["edges_cka"] == pytest.approx(1, abs=1e-9)
    other = fidelity_scores(features, {}, {"edges": Features(torch.zeros(5, 6), target)})
    assert set(other) == {"edges_cka", "rankme"} and other["edges_cka"] < 0.5


def test_encoder_fidelity_of_an_encoder_that_is_the_expert():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(3, 3, 32, 32, generator=g)
    projection = torch.randn(5, 3, generator=g)

    def expert(x):  # patches: a fixed linear map of 8x8-pooled pixels
        patches = torch.einsum("dc,bchw->bdhw", projection, torch.nn.functional.avg_pool2d(x, 4))
        return EncoderFeatures(patches.mean((2, 3)), patches)

    def copy(x, with_experts=False):  # its own features and its estimate are the expert's, at twice the scale
        own = expert(x)
        return EncoderFeatures(
            own.summary, 2 * own.patches, {"edges": Features(own.summary, 2 * own.patches)}
        )

    scores = encoder_fidelity(copy, {"edges": expert}, images)
    assert scores["edges_cka"] == pytest.approx(1, abs=1e-9) and scores["edges_cos"] == pytest.approx(
        1, abs=1e-6
    )
    assert scores["rankme"] == pytest.approx(rankme(expert(images).patches), rel=1e-6)


def test_the_fidelity_and_propagation_probes_score_encoders_on_the_held_out_photos_and_clips() -> None:
    """Through the scoreboard's own path: an expert's CKA with itself is 1 and with another expert below it;
    a random network has a higher effective rank than 1 and a J&F between 0 and 1."""
    from workbench.eval.encoders import build_encoder
    from workbench.eval.probes.inputs import ExpertReferences
    from workbench.eval.scoreboard import eval_data, score_encoder
    from workbench.eval.settings import EvalSettings

    settings = EvalSettings(scene_train=8, scene_test=4, photos=6, clips=2, clip_frames=4, fashion_train=0)
    data = eval_data(settings)
    references = ExpertReferences(["semantic", "edges"], data.photos)
    expert = score_encoder(build_encoder("semantic"), data, settings, references, ["fidelity"])
    assert expert["semantic_cka"] == pytest.approx(1.0, abs=1e-6)
    assert 0.0 < expert["edges_cka"] < 0.9
    random = score_encoder(
        build_encoder("timm:test_vit", 64, weights="random"),
        data,
        settings,
        references,
        ["fidelity", "propagation"],
    )
    assert set(random) >= {"semantic_cka", "edges_cka", "rankme", "propagation_j", "propagation_jf"}
    assert random["rankme"] > 2.0 and 0.0 <= random["propagation_jf"] <= 1.0
