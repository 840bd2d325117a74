"""A distilled checkpoint (proxy or student) used as a teacher: its backbone's summary and patches."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from distill.checkpoint import load_into, read_meta
from distill.config import ModelConfig
from distill.features import Features
from distill.models import DistilledModel
from distill.teachers.base import Teacher


def load_distilled(folder: str | Path) -> DistilledModel:
    """Rebuild a `DistilledModel` (backbone and adaptors) from a checkpoint folder, in eval mode."""
    meta = read_meta(folder)
    model = DistilledModel(
        ModelConfig(**meta["model_config"]), {k: tuple(v) for k, v in meta["teachers"].items()}
    )
    load_into(model, folder)
    return model.eval()


class DistilledTeacher(Teacher):
    """A frozen proxy or student checkpoint as a teacher (its backbone features, not its adaptors).

    Args:
        model: the checkpoint folder (`runs/NAME/proxy/checkpoint`) or a loaded `DistilledModel`.
        resolution: square input side; None keeps the input size rounded to the patch size.
    """

    def __init__(self, model: str | Path | DistilledModel, resolution: int | None = None) -> None:
        if not isinstance(model, DistilledModel):
            model = load_distilled(model)
        # the model normalises its own input: the teacher's prepare() only resizes
        super().__init__((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resolution, size_multiple=model.stride)
        self.model = model
        self.summary_dim = self.patch_dim = model.dim
        self.patch_stride = model.stride
        self.freeze()

    def encode(self, x: Tensor) -> Features:
        return self.model.features(x)

    def encoder_modules(self) -> list[nn.Module]:
        """The backbone alone: the adaptor heads are not part of the encoder."""
        return [self.model.backbone]
