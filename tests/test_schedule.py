"""The learning-rate schedules of a stage: warm-up, then cosine or warm-up/stable/decay (WSD)."""

import math

import pytest

from distill.config import ConfigError, StageConfig, load_config
from distill.trainer import learning_rate


def stage(**kwargs) -> StageConfig:
    return StageConfig(**{"steps": 100, "batch_size": 4, "lr": 1e-3, "warmup_steps": 10} | kwargs)


def test_warmup_is_linear_to_the_peak_for_both_schedules():
    for schedule in ("cosine", "wsd"):
        cfg = stage(schedule=schedule)
        assert [learning_rate(s, cfg) for s in (0, 4, 9)] == pytest.approx([1e-4, 5e-4, 1e-3])


def test_cosine_decays_to_zero_at_the_last_step():
    cfg = stage()
    assert learning_rate(10, cfg) == pytest.approx(1e-3)
    assert learning_rate(55, cfg) == pytest.approx(0.5e-3)  # half way through the decay
    assert learning_rate(99, cfg) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_wsd_holds_the_peak_then_decays_linearly_over_the_last_fraction():
    cfg = stage(schedule="wsd", decay_fraction=0.2)  # decay over steps 80..99
    assert all(learning_rate(s, cfg) == pytest.approx(1e-3) for s in range(10, 80))
    assert learning_rate(90, cfg) == pytest.approx(1e-3 * 10 / 20)
    assert learning_rate(99, cfg) == pytest.approx(1e-3 / 20)
    # the mean rate after warm-up: ~0.9 of the peak, against 0.5 for cosine
    mean = sum(learning_rate(s, cfg) for s in range(10, 100)) / 90
    assert mean == pytest.approx((70 + 10.5) / 90 * 1e-3)


def test_wsd_decay_never_starts_inside_the_warmup():
    cfg = stage(schedule="wsd", decay_fraction=1.0, warmup_steps=10)
    assert learning_rate(9, cfg) == pytest.approx(1e-3)
    assert learning_rate(10, cfg) == pytest.approx(1e-3)  # decay spans steps 10..99
    assert learning_rate(55, cfg) == pytest.approx(1e-3 * 45 / 90)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("stages.proxy.schedule=step", "stages.proxy.schedule' must be one of cosine, wsd"),
        ("stages.student.decay_fraction=0", r"stages.student.decay_fraction' must be in \(0, 1\]"),
        ("stages.direct.decay_fraction=1.5", r"stages.direct.decay_fraction' must be in \(0, 1\]"),
    ],
)
def test_bad_schedules_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/tiny.yaml", [override])
