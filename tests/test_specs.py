"""The one spec parser (`distill.specs`): expert, timm, folder and floor, with one set of errors."""

from __future__ import annotations

import pytest

from distill.config import load_config
from distill.pipeline import check_teacher
from distill.specs import Spec, floor_spec, parse_spec


def test_each_kind_of_spec(tmp_path) -> None:
    assert parse_spec("edges") == Spec("expert", "edges")
    assert parse_spec("timm:convnext_atto") == Spec("timm", "convnext_atto")
    alias = parse_spec("dinov3-h+")
    assert alias.kind == "timm" and alias.timm_model.startswith("vit_huge")
    assert parse_spec(str(tmp_path)) == Spec("folder", str(tmp_path))
    assert parse_spec(floor_spec("runs/x/student"), floor=True) == Spec("floor", "runs/x/student")


def test_bad_specs_are_one_line_errors_everywhere() -> None:
    with pytest.raises(KeyError, match="unknown teacher 'nope'; known: semantic, text, edges, or timm:"):
        parse_spec("nope")
    with pytest.raises(ValueError, match="'random:runs/x' is a random floor, not a teacher"):
        parse_spec("random:runs/x")
    teacher = load_config("configs/tiny.yaml").teachers[0]
    teacher.name = "nope"
    with pytest.raises(ValueError, match=r"config key 'teachers\[0\].name': unknown teacher 'nope'; known"):
        check_teacher(teacher, "teachers[0]")
