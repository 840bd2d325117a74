"""The dashboard's Timeline tab: a stage's snapshots (`distill.snapshots`) step by step as PCA maps beside the
experts', a GIF of them, and the fidelity curves (CKA, cosine, RankMe) of any runs' stages on shared axes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from distill.run_dir import RunDir
from distill.snapshots import snapshot_steps
from distill.stages import BASELINE, EUPE_STUDENT, stage_named
from workbench.eval.fidelity import Timeline, stage_timeline
from workbench.explore import runs as wr
from workbench.explore.timeline import timeline_gif
from workbench.viz.timeline import BASES, TimelineMaps, timeline_figure

BASIS_LABELS = {"last": "fitted on the last snapshot", "expert": "the expert's (estimates)"}


def snapshotted(run: wr.Run) -> list[str]:
    """The stages of a run that have snapshots, in pipeline order."""
    return [s.name for s in run.stages if snapshot_steps(RunDir(run.folder).snapshots(s.name))]


@st.cache_resource(max_entries=8, show_spinner=False)
def timeline_maps(folder: str, stage: str, basis: str, steps: tuple[int, ...]) -> TimelineMaps:
    """A stage's maps, rebuilt when its snapshots change (`steps`)."""
    return TimelineMaps(folder, stage, basis)


@st.cache_data(max_entries=8, show_spinner=False)
def gif_bytes(folder: str, stage: str, basis: str, steps: tuple[int, ...]) -> bytes:
    """The bytes of the stage's timeline GIF."""
    with tempfile.TemporaryDirectory() as scratch:
        return timeline_gif(
            timeline_maps(folder, stage, basis, steps), Path(scratch) / "timeline.gif"
        ).read_bytes()


@st.cache_data(max_entries=64, show_spinner=False)
def fidelity_timeline(folder: str, stage: str, steps: tuple[int, ...]) -> Timeline:
    return stage_timeline(folder, stage)


def show_timeline(run: wr.Run, runs: list[wr.Run]) -> None:
    """The Timeline tab of one run (`runs`: every run, for curves across runs)."""
    stages = snapshotted(run)
    if not stages:
        st.info("No snapshots in this run: train with `train.snapshot_every=N` (on in configs/toy.yaml).")
        return
    stage = st.selectbox("Stage", stages, index=len(stages) - 1, key="timeline_stage")
    basis = st.radio("PCA basis", BASES, format_func=BASIS_LABELS.get, horizontal=True, key="timeline_basis")
    steps = tuple(snapshot_steps(RunDir(run.folder).snapshots(stage)))
    try:
        maps = timeline_maps(str(run.folder), stage, basis, steps)
        step = (
            st.select_slider("Step", steps, value=steps[-1], key="timeline_step")
            if len(steps) > 1
            else steps[0]
        )
        st.image(maps.picture(step), caption=f"step {step}; rows {', '.join(maps.names)}; columns "
                 f"{', '.join(maps.columns)}")  # fmt: skip
        st.download_button("GIF of the timeline", gif_bytes(str(run.folder), stage, basis, steps),
                           file_name=f"{run.name}-{stage}-timeline.gif", mime="image/gif")  # fmt: skip
    except (ValueError, OSError, KeyError) as error:
        st.warning(wr.one_line(error))
    st.subheader("Fidelity against steps")
    choices = {f"{r.name}/{name}": (r, name) for r in runs for name in snapshotted(r)}
    fresh = (stage_named(EUPE_STUDENT).starts_from, BASELINE)  # both students from their random start
    defaults = [f"{run.name}/{name}" for name in stages if name in fresh] or [f"{run.name}/{stage}"]
    picked = st.multiselect("Stages (any runs)", list(choices), default=defaults, key="timeline_curves")
    timelines = []
    for label in picked:
        r, name = choices[label]
        try:
            timelines.append(
                fidelity_timeline(
                    str(r.folder), name, tuple(snapshot_steps(RunDir(r.folder).snapshots(name)))
                )
            )
        except (ValueError, OSError, KeyError) as error:
            st.warning(f"{label}: {wr.one_line(error)}")
    if timelines:
        st.pyplot(timeline_figure(timelines))
