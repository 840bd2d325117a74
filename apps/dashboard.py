"""`eupe dashboard`: how training runs went and how they compare (Streamlit).

Start it with `eupe dashboard --runs runs`, or `streamlit run apps/dashboard.py -- --runs runs`; the
runs folder can also come from the EUPE_RUNS environment variable. A thin layer over `workbench.runs`
(reading run folders) and `workbench.explorer` (feature maps of a picked checkpoint).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import altair as alt
import pandas as pd
import streamlit as st
import yaml

from apps.timeline_tab import show_timeline
from distill.data.photos import photo_names
from distill.stages import BASELINE, EUPE_STUDENT
from distill.teachers import EXPERTS
from distill.teachers.registry import expert_spec
from workbench.explore import runs as wr
from workbench.explore.explorer import Explorer

T = TypeVar("T")
BEST_STYLE = "background-color: rgba(46, 160, 67, 0.25); font-weight: bold"
MAKE_A_RUN = (
    "Make one with `eupe pipeline --config configs/toy.yaml --out runs/toy` (a few minutes on a CPU), "
    "then score it with `eupe eval --runs runs/toy --out runs/toy/eval`."
)
REFRESH_S = 10  # how often files are re-read, and a view of a run that trains is redrawn
LIVE = f"Training: redrawn every {REFRESH_S} s while its files change."
TIMELINE_FORMATS = {
    "final_loss": wr.value_format("loss"),
    "images_per_second": wr.value_format("images_per_second"),
}


def runs_root() -> Path:
    """The runs folder: `-- --runs DIR` on the streamlit command line, else $EUPE_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    args, _ = parser.parse_known_args()
    return Path(args.runs or os.environ.get("EUPE_RUNS", "runs"))


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def load_runs(root: str) -> list[wr.Run]:
    """The runs in `root`, re-read every REFRESH_S s at most (a ValueError when it is not a readable tree)."""
    return wr.list_runs(root)


@st.cache_data(ttl=REFRESH_S, show_spinner=False)
def load_metrics(run: str, stage: str, folder: str) -> tuple[pd.DataFrame, list[str]]:
    """A stage's metrics table and the problems met reading it, re-read every REFRESH_S s at most (runs grow
    while they train)."""
    problems: list[str] = []
    return wr.read_metrics(wr.StageFolder(run, stage, Path(folder)), problems.append), problems


@st.cache_resource(show_spinner=False)
def explorer(root: str) -> Explorer:
    """One explorer per runs folder: encoders built once, features cached across reruns."""
    return Explorer(root, display=224)


@st.cache_data(show_spinner="computing features…")
def feature_maps(root: str, specs: tuple[str, ...], photo: str, resolution: int) -> tuple[list, list[str]]:
    """(pictures with captions, notes) of the PCA maps of some encoders on a bundled photo."""
    shown = explorer(root)
    view = list(shown.feature_maps(shown.load_photo(photo), list(specs), resolution))[-1]
    return [(p.image, p.caption) for p in view.panels], view.notes


def warn(problems: list[str]) -> None:
    """Each problem (a bad file) as a one-line warning, once."""
    for problem in dict.fromkeys(problems):
        st.warning(problem, icon="⚠️")


def attempt(read: Callable[..., T], *args: object) -> T | None:
    """`read(*args)`, or None with a one-line warning in its place when a file it reads is bad."""
    try:
        return read(*args)
    except ValueError as error:
        warn([wr.one_line(error)])
        return None


def table(frame: pd.DataFrame, formats: dict[str, str], hide_index: bool = True) -> None:
    """A table, whole (no inner scrollbar), with its numbers formatted (column -> format)."""
    styled = frame.style.format({k: f for k, f in formats.items() if k in frame.columns}, na_rep="—")
    st.dataframe(styled, hide_index=hide_index, height="content")


def live(running: Callable[[], bool], draw: Callable[[], None]) -> None:
    """Draw a view; while `running()` says a run of it trains, as a fragment redrawn every REFRESH_S s (the
    page reruns when training stops, and draws it once more, as it is)."""
    if not running():
        draw()
        return

    @st.fragment(run_every=REFRESH_S)
    def redraw() -> None:
        if not running():
            st.rerun()
        st.caption(LIVE)
        draw()

    redraw()


def show_feature_maps(root: Path, specs: list[str], key: str) -> None:
    """A photo picker and the PCA maps of `specs` on it."""
    left, right = st.columns(2)
    photo = left.selectbox("Photo", photo_names(), index=photo_names().index("astronaut"), key=f"{key}-photo")
    resolution = right.select_slider("Resolution", [64, 96, 128, 160, 224], value=128, key=f"{key}-res")
    try:
        pictures, notes = feature_maps(str(root), tuple(specs), photo, resolution)
    except wr.BAD_CHECKPOINT as error:  # a checkpoint damaged after its metadata was read
        warn([f"no feature maps: {wr.one_line(error)}"])
        return
    st.image([p for p, _ in pictures], caption=[c for _, c in pictures], width=180)
    for note in notes:
        st.warning(note)


def show_experts(root: Path) -> None:
    """The experts: what they are, their sizes, and what they see."""
    rows = []
    for name in EXPERTS:
        encoder = explorer(str(root)).cache.encoder(name)
        rows.append(
            {
                "expert": name,
                **expert_spec(name).facts(),
                "params (M)": encoder.num_parameters() / 1e6,
                "summary dim": encoder.summary_dim,
                "patches": f"{encoder.patch_dim} @ /{encoder.patch_stride}",
            }
        )
    table(pd.DataFrame(rows), {"params (M)": wr.value_format("params_m")})
    show_feature_maps(root, list(EXPERTS), "experts")


def stage_scale(stages: list[str]) -> alt.Scale:
    """Colours of stages (by name), the stage table's, the same in every chart."""
    return alt.Scale(domain=stages, range=[wr.stage_colour(stage) for stage in stages])


def timeline_chart(timeline: pd.DataFrame) -> alt.Chart:
    """Stages as bars over cumulative steps: EUPE's chain end to end, the direct baseline from 0."""
    stages = list(timeline["stage"])
    bars = (
        alt.Chart(timeline)
        .mark_bar()
        .encode(
            x=alt.X("start:Q", title="cumulative steps"),
            x2="end:Q",
            y=alt.Y("stage:N", sort=list(timeline["stage"]), title=None),
            color=alt.Color("stage:N", scale=stage_scale(stages), legend=alt.Legend(orient="bottom")),
            tooltip=list(timeline.columns),
        )
    )
    return bars.properties(height=alt.Step(28))


def show_overview(run: wr.Run) -> None:
    """The stage timeline (chart and table) and the run's config; bad files as warnings below the table."""
    problems: list[str] = []
    timeline = wr.timeline(run, problems.append)
    if timeline.empty:
        st.info("This run has no stage folders yet.")
    else:
        st.altair_chart(timeline_chart(timeline), width="stretch")
        table(timeline, TIMELINE_FORMATS)
    try:
        config = wr.read_config(run)
    except ValueError:  # `timeline` met it too
        config = None
    warn(problems)
    if config is not None:
        with st.expander("config.yaml"):
            st.code(yaml.safe_dump(config, sort_keys=False), language="yaml")


def loss_chart(terms: pd.DataFrame) -> alt.Chart:
    """Per-teacher loss terms over steps: colour = teacher, dash = term."""
    return (
        alt.Chart(terms)
        .mark_line()
        .encode(
            x="step:Q",
            y=alt.Y("value:Q", title="loss"),
            color="teacher:N",
            strokeDash="term:N",
            tooltip=["step", "teacher", "term", "value"],
        )
        .properties(height=260)
    )


def overlay_chart(frame: pd.DataFrame, x_label: str, y_label: str) -> alt.Chart:
    """Curves of stages (a `curves` frame: columns `run/stage`) over steps: colour = stage, as in every chart;
    dash = run, where several runs are drawn."""
    long = frame.rename_axis("step").reset_index().melt("step", var_name="curve", value_name="value").dropna()
    long["run"] = long["curve"].str.rsplit("/", n=1).str[0]
    long["stage"] = long["curve"].str.rsplit("/", n=1).str[-1]
    encoding = {
        "x": alt.X("step:Q", title=x_label),
        "y": alt.Y("value:Q", title=y_label),
        "color": alt.Color("stage:N", scale=stage_scale(list(dict.fromkeys(long["stage"])))),
        "detail": "curve:N",
        "tooltip": ["curve", "step", "value"],
    }
    if long["run"].nunique() > 1:
        encoding["strokeDash"] = alt.StrokeDash("run:N")
    return alt.Chart(long).mark_line().encode(**encoding).properties(height=260)


def draw_curves(frame: pd.DataFrame, x_label: str, y_label: str) -> None:
    """`overlay_chart` of some curves, and a note on those that lie on top of one another."""
    if frame.empty:
        return
    st.altair_chart(overlay_chart(frame, x_label, y_label), width="stretch")
    for group in wr.identical_curves(frame):
        st.caption(f"{', '.join(group)}: identical {y_label} curves, drawn on top of each other")


def show_overlay(
    stages: list[wr.StageFolder], column: str, key: str, starts: dict[str, int] | None = None
) -> None:
    """One metric of several stages on shared axes. A loss is compared only within one objective (a chart
    per objective), unless the user divides each stage's loss by its first value."""
    x_label = "step" if starts is None else "cumulative steps"
    groups = {"": stages}
    if wr.is_loss(column):
        groups = {}
        for stage in stages:
            groups.setdefault(wr.objective(stage), []).append(stage)
    relative = len(groups) > 1 and st.checkbox(
        "Overlay the objectives: each stage's loss divided by its first value", key=f"{key}-relative"
    )
    if relative:
        draw_curves(wr.curves(stages, column, starts, relative=True), x_label, f"{column} / first")
        return
    for target, members in groups.items():
        if target:
            st.caption(f"{column} against {target}: {', '.join(s.label for s in members)}")
        draw_curves(wr.curves(members, column, starts), x_label, column)


def show_curves(run: wr.Run) -> None:
    """Loss terms per teacher for each chosen stage, then total loss, learning rate and throughput."""
    metrics = {s.name: load_metrics(s.run, s.name, str(s.folder)) for s in run.stages}
    stages = [s for s in run.stages if not metrics[s.name][0].empty or metrics[s.name][1]]
    if not stages:
        st.info("No metrics logged yet.")
        return
    chosen = st.multiselect("Stages", [s.name for s in stages], default=[s.name for s in stages])
    stages = [s for s in stages if s.name in chosen]
    all_terms = sorted({t for s in stages for t in wr.loss_terms(metrics[s.name][0])["term"]})
    terms = st.multiselect(
        "Loss terms", all_terms, default=[t for t in ("total",) if t in all_terms] or all_terms
    )
    for stage in stages:
        frame, problems = metrics[stage.name]
        long = wr.loss_terms(frame)
        st.markdown(f"**{stage.name}** · {stage.role} · against {wr.objective(stage)}")
        warn(problems)
        st.altair_chart(loss_chart(long[long["term"].isin(terms)]), width="stretch")
    for column, title in (
        ("loss", "Total loss"),
        ("lr", "Learning rate"),
        ("images_per_second", "Throughput (images/s)"),
    ):
        if any(column in metrics[s.name][0].columns for s in stages):
            st.markdown(f"**{title}**")
            show_overlay(stages, column, f"curves-{column}")


def show_scoreboards(run: wr.Run) -> None:
    """Every scoreboard written into the run (a bad one as a warning), or how to make one."""
    problems: list[str] = []
    boards = wr.find_scoreboards(run, problems.append)
    warn(problems)
    if not boards and not problems:
        st.info(f"No scoreboard yet: `eupe eval --runs {run.folder} --out {run.folder}/eval`.")
    for board in boards:
        st.markdown(f"**{board.folder}**")
        table(wr.scoreboard_frame(board.rows), wr.title_formats())
        if (board.folder / "scoreboard.png").is_file():
            st.image(str(board.folder / "scoreboard.png"))


def show_checkpoints(root: Path, run: wr.Run) -> None:
    """The checkpoint picker: what a stage's checkpoint holds and what it sees next to the experts."""
    stages = [s for s in run.stages if s.checkpoint]
    if not stages:
        st.info("No checkpoint saved yet.")
        return
    name = st.selectbox("Checkpoint", [s.name for s in stages], index=len(stages) - 1)
    stage = run.stage(name)
    info = attempt(wr.checkpoint_info, stage)
    if info is None:
        return
    step, arch, size, teachers = st.columns([1, 3, 1, 2])
    step.metric("step", info["step"])
    arch.metric("architecture", info["arch"])
    size.metric("size (MB)", info["size_mb"])
    teachers.metric("teachers", ", ".join(info["teachers"]))
    with st.expander("checkpoint details"):
        st.json(info)
    with_experts = st.checkbox("Show the experts too", value=False)
    show_feature_maps(root, [*(EXPERTS if with_experts else ()), str(stage.folder)], f"ckpt-{stage.label}")


def show_run(root: Path, run: wr.Run) -> None:
    """One run: overview, curves, scoreboard and checkpoints, one tab each."""
    st.header(run.name)
    st.caption(str(run.folder))
    overview, curves, timeline, scoreboard, checkpoints = st.tabs(
        ["Overview", "Curves", "Timeline", "Scoreboard", "Checkpoints"]
    )
    with overview:
        show_overview(run)
    with curves:
        show_curves(run)
    with timeline:
        show_timeline(run, load_runs(str(root)))
    with scoreboard:
        show_scoreboards(run)
    with checkpoints:
        show_checkpoints(root, run)


def styled_comparison(entries: dict[str, dict]) -> pd.io.formats.style.Styler:
    """Scoreboard rows side by side, each metric formatted and its best value highlighted (none on a tie, as
    shown); with two, their difference."""
    values, best = wr.compare_frame(entries)
    if len(entries) == 2:
        first, second = values.columns
        values[f"{second} − {first}"] = values[second] - values[first]
        best[f"{second} − {first}"] = False
    styled = values.style.apply(lambda _: best.map(lambda flag: BEST_STYLE if flag else ""), axis=None)
    formats = wr.title_formats()
    for title in values.index:
        styled = styled.format(formats[title], subset=pd.IndexSlice[[title], :], na_rep="—")
    return styled


def show_compare(runs: list[wr.Run]) -> None:
    """Two or more stages (of any runs): a curve overlaid, scoreboards side by side, config differences."""
    st.header("Compare")
    stages = {s.label: s for run in runs for s in run.stages}
    defaults = [f"{runs[0].name}/{n}" for n in (EUPE_STUDENT, BASELINE) if f"{runs[0].name}/{n}" in stages]
    chosen = st.multiselect(
        "Stages to compare (two or more)", list(stages), default=defaults or list(stages)[:2]
    )
    if len(chosen) < 2:
        st.warning("Pick two or more stages.")
        return
    picked = [stages[label] for label in chosen]
    run_of = {r.name: r for r in runs}
    compared = [run_of[name] for name in dict.fromkeys(s.run for s in picked)]
    live(lambda: any(map(wr.is_running, compared)), lambda: show_comparison(picked, compared))


def show_comparison(picked: list[wr.StageFolder], runs: list[wr.Run]) -> None:
    """The picked stages' curves (within one objective), scoreboard rows and config differences."""
    metrics = [load_metrics(s.run, s.name, str(s.folder))[0] for s in picked]
    common = [c for c in metrics[0].columns if c != "step" and all(c in m.columns for m in metrics[1:])]
    if common:
        column = st.selectbox("Curve", common, index=common.index("loss") if "loss" in common else 0)
        along = st.checkbox("Along the recipe (each stage after the one it starts from)", value=False)
        show_overlay(picked, column, "compare", wr.recipe_starts(runs) if along else None)
    problems: list[str] = []
    run_of = {r.name: r for r in runs}
    entries = {}
    for stage in picked:
        try:
            row = wr.scoreboard_row(run_of[stage.run], str(stage.folder), problems.append)
        except ValueError as error:
            problems.append(str(error))
            continue
        if row is not None:
            entries[stage.label] = row
    st.subheader("Scoreboards")
    warn(problems)
    if entries:
        st.dataframe(styled_comparison(entries), height="content")
    missing = [s.label for s in picked if s.label not in entries]
    if missing:
        st.info(f"No scoreboard row for {', '.join(missing)}: run `eupe eval` on their runs.")
    problems = []
    configs = {}
    for run in runs:
        try:
            configs[run.name] = wr.read_config(run)
        except ValueError as error:
            problems.append(str(error))
    if len(runs) > 1:
        st.subheader("Config differences")
        warn(problems)
        st.dataframe(wr.config_differences(configs), height="content")


def show_run_page(root: Path, name: str) -> None:
    """The page of the run called `name`, re-read from the runs folder (it may grow while it trains)."""
    run = next((r for r in load_runs(str(root)) if r.name == name), None)
    if run is None:
        st.info(f"The run {name} is gone from {root}.")
        return
    show_run(root, run)


def main() -> None:
    """The page: the runs in the sidebar, then one run or the comparison (or the experts when no runs)."""
    st.set_page_config(page_title="EUPE runs", layout="wide")
    root = Path(st.sidebar.text_input("Runs folder", str(runs_root())))
    st.title("EUPE runs")
    try:
        runs = load_runs(str(root))
    except ValueError as error:
        st.error(wr.one_line(error))
        return
    if not runs:
        st.info(f"No runs in `{root}` yet. {MAKE_A_RUN}")
        st.header("The experts")
        show_experts(root)
        return
    view = st.sidebar.radio("View", ["Run", "Compare"])
    if view == "Compare":
        show_compare(runs)
        return
    name = st.sidebar.selectbox("Run", [r.name for r in runs])
    run = next(r for r in runs if r.name == name)
    live(lambda: wr.is_running(run), lambda: show_run_page(root, name))


main()
