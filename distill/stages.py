"""The stage table: every fact about the four stages, declared once.

EUPE trains a proxy on the experts (stage 1), a student on the proxy (stage 2), and the same student
on the proxy at several resolutions (stage 3); the direct baseline trains the student on the experts.
Everything else (the pipeline order, config validation, which model a stage builds, which teachers
it loads, which checkpoint it starts from, the scoreboard's role labels and colours, the
comparisons the recipe is about) derives from `STAGES`. Adding a stage is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

EXPERTS = "experts"  # `Stage.taught_by` of a stage whose teachers are the configured experts


@dataclass(frozen=True)
class Stage:
    """One stage of the recipe.

    Attributes:
        name: the stage's name in configs, run folders and the CLI.
        model: which of the config's models it trains (`proxy` or `student`, a `RunConfig` field).
        taught_by: `EXPERTS`, or the name of the stage whose checkpoint is its teacher.
        starts_from: the stage whose checkpoint initialises its model, or None (random init).
        role: its role in the paper's terms, as the scoreboard shows it.
        colour: its colour in the scoreboard's figures.
    """

    name: str
    model: str
    taught_by: str
    starts_from: str | None
    role: str
    colour: str

    @property
    def reads(self) -> tuple[str, ...]:
        """The stages whose checkpoints it needs, in pipeline order (its teacher and its starting point)."""
        needed = {self.taught_by, self.starts_from} - {EXPERTS, None}
        return tuple(name for name in STAGE_NAMES if name in needed)

    @property
    def continues(self) -> str | None:
        """The stage it carries on from (its starting point, else its teacher); None for a fresh start."""
        return self.starts_from or (None if self.taught_by == EXPERTS else self.taught_by)


STAGES = (
    Stage("proxy", "proxy", EXPERTS, None, "proxy (stage 1)", "#9467bd"),
    Stage("student", "student", "proxy", None, "EUPE student (stages 1-2)", "#aec7e8"),
    Stage("multires", "student", "proxy", "student", "EUPE student (stages 1-2-3)", "#1f77b4"),
    Stage("direct", "student", EXPERTS, None, "direct student (baseline)", "#ff7f0e"),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)  # also the pipeline's order
EUPE_STUDENT, BASELINE = "multires", "direct"  # the recipe's claim: the first beats the second


def stage_named(name: str) -> Stage:
    """The stage called `name`; a one-line ValueError naming the known stages otherwise."""
    for known in STAGES:
        if known.name == name:
            return known
    raise ValueError(f"unknown stage '{name}' (known: {', '.join(STAGE_NAMES)})")


def role_of(name: str) -> str:
    """The role label of a stage (the name itself for a folder that is not a known stage)."""
    return next((known.role for known in STAGES if known.name == name), name)
