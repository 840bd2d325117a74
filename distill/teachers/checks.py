"""Behaviour checks of the three offline experts on real photos and rendered text.

Each check measures one thing the expert is known to do and compares it with a pass mark; the
tests and `eupe teachers check` call the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data.images import square_view
from distill.data.photos import load_photo
from distill.teachers.base import Teacher

IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@dataclass
class CheckResult:
    """Outcome of one behaviour check: what was measured, its value(s), and whether it passed."""

    expert: str
    claim: str
    measured: dict[str, float]
    passed: bool

    def line(self) -> str:
        """One printable line: PASS/FAIL, expert, claim, measurements."""
        values = ", ".join(f"{k}={v:.3g}" for k, v in self.measured.items())
        return f"{'PASS' if self.passed else 'FAIL'}  {self.expert:9s} {self.claim}: {values}"


def photo_batch(name: str, resolution: int) -> Tensor:
    """A bundled photo as a [1, 3, R, R] square view."""
    return square_view(load_photo(name), resolution)[None]


def check_semantic(teacher: Teacher) -> CheckResult:
    """EfficientNet-Lite0 puts scikit-image's chelsea photo in an ImageNet cat class (281-285)."""
    probs = teacher.expert_output(load_photo("chelsea")[None]).softmax(-1)[0]
    top1 = int(probs.argmax())
    cat_mass = float(probs[list(IMAGENET_CAT_CLASSES)].sum())
    return CheckResult(
        "semantic", "chelsea -> ImageNet cat class", {"top1_class": top1, "cat_probability": cat_mass},
        passed=top1 in IMAGENET_CAT_CLASSES,
    )  # fmt: skip


CHECKS: dict[str, Callable[[Teacher], CheckResult]] = {"semantic": check_semantic}


@torch.no_grad()
def run_check(expert: str, teacher: Teacher) -> CheckResult:
    """Run the behaviour check registered for `expert` on a built teacher."""
    return CHECKS[expert](teacher)
