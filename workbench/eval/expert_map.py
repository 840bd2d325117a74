"""A distilled model's way into its experts' feature spaces: its adaptor heads, un-standardised with the
statistics its stage was trained with, chained through the proxy for a student."""

from __future__ import annotations

from torch import nn

from distill.distilled_teacher import DistilledTeacher
from distill.features import Features
from distill.models import DistilledModel, adaptor_key
from distill.run_dir import RunDir
from distill.stages import STAGE_NAMES
from distill.standardize import TeacherStandardizer, load_standardizers


class ExpertMap(nn.Module):
    """Maps a distilled backbone's features into its teachers' spaces (and on, through a teacher stage such
    as the proxy, to the experts).

    Args:
        adaptors: a distilled model's adaptor heads, by `adaptor_key` of the teacher name.
        teacher_names: their teachers.
        standardizers: its stage's standardisers, by teacher name.
        via: the map of the stage that taught it, for a stage taught by another stage (`Stage.taught_by`).
    """

    def __init__(
        self,
        adaptors: nn.ModuleDict,
        teacher_names: list[str],
        standardizers: dict[str, TeacherStandardizer],
        via: tuple[str, ExpertMap] | None = None,
    ) -> None:
        super().__init__()
        self.adaptors = adaptors
        self.teacher_names = list(teacher_names)
        self.standardizers = nn.ModuleDict({adaptor_key(n): standardizers[n] for n in self.teacher_names})
        self.via_name, self.via = via if via is not None else (None, None)

    def experts(self) -> list[str]:
        """The expert names this map reaches."""
        return self.via.experts() if self.via is not None else list(self.teacher_names)

    def forward(self, features: Features) -> dict[str, Features]:
        outputs = {}
        for name in self.teacher_names:
            key = adaptor_key(name)
            outputs[name] = self.standardizers[key].inverse(self.adaptors[key](features))
        if self.via is not None:
            return self.via(outputs[self.via_name])
        return outputs


def stage_expert_map(run: RunDir, stage: str, model: DistilledModel) -> ExpertMap | None:
    """The expert map of a run's stage, or None when its statistics (or its teacher stage's) are missing."""
    saved = run.standardizers(stage)
    if not saved.is_file():
        return None
    via = None
    teacher_stages = [name for name in model.teacher_names if name in STAGE_NAMES]
    if teacher_stages:
        teacher = teacher_stages[0]
        teacher_map = stage_expert_map(run, teacher, DistilledTeacher(run.checkpoint(teacher)).model)
        if teacher_map is None:
            return None
        via = (teacher, teacher_map)
    return ExpertMap(model.adaptors, model.teacher_names, load_standardizers(saved), via)
