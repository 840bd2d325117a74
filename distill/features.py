"""What every encoder gives for an image batch: a summary vector and a patch grid."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Features:
    """A summary vector and a patch grid per image: a teacher's output, an adaptor's prediction of it, a
    student's estimate of an expert's features, a standardised target.

    Attributes:
        summary: [B, D_summary] global (CLS-like) vector per image.
        patches: [B, D_patch, h, w] dense feature grid.
    """

    summary: Tensor
    patches: Tensor
