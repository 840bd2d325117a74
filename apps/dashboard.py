"""`eupe dashboard`: how training runs went and how they compare (Streamlit).

Start it with `eupe dashboard --runs runs`, or `streamlit run apps/dashboard.py -- --runs runs`; the
runs folder can also come from the EUPE_RUNS environment variable. A thin layer over `workbench.runs`
(reading run folders) and `workbench.explorer` (feature maps of a picked checkpoint).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st
import yaml

from distill.data.photos import photo_names
from distill.stages import BASELINE, EUPE_STUDENT
from distill.teachers import EXPERTS
from distill.teachers.registry import expert_spec
from workbench.explore import runs as wr
from workbench.explore.explorer import Explorer

BEST_STYLE = "background-color: rgba(46, 160, 67, 0.25); font-weight: bold"
MAKE_A_RUN = (
    "Make one with `eupe pipeline --config configs/toy.yaml --out runs/toy` (a few minutes on a CPU), "
    "then score it with `eupe eval --runs runs/toy --out runs/toy/eval`."
)


def runs_root() -> Path:
    """The runs folder: `-- --runs DIR` on the streamlit command line, else $EUPE_RUNS, else ./runs."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--runs")
    args, _ = parser.parse_known_args()
    return Path(args.runs or os.environ.get("EUPE_RUNS", "runs"))


@st.cache_data(ttl=10, show_spinner=False)
def load_runs(root: str) -> list[wr.Run]:
    """The runs in `root`, re-read every 10 s at most."""
    return wr.list_runs(root)


@st.cache_data(ttl=10, show_spinner=False)
def load_metrics(run: str, stage: str, folder: str) -> pd.DataFrame:
    """A stage's metrics table, re-read every 10 s at most (runs grow while they train)."""
    return wr.read_metrics(wr.StageFolder(run, stage, Path(folder)))


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


def show_feature_maps(root: Path, specs: list[str], key: str) -> None:
    """A photo picker and the PCA maps of `specs` on it."""
    left, right = st.columns(2)
    photo = left.selectbox("Photo", photo_names(), index=photo_names().index("astronaut"), key=f"{key}-photo")
    resolution = right.select_slider("Resolution", [64, 96, 128, 160, 224], value=128, key=f"{key}-res")
    pictures, notes = feature_maps(str(root), tuple(specs), photo, resolution)
    st.image([p for p, _ in pictures], caption=[c for _, c in pictures], width=180)
    for note in notes:
        st.warning(note)


def show_experts(root: Path) -> None:
    """The experts: what they are, their sizes, and what they see."""
    rows = []
    for name in EXPERTS:
        encoder = explorer(str(root)).store.encoder(name)
        rows.append(
            {
                "expert": name,
                **expert_spec(name).facts(),
                "params (M)": round(encoder.num_parameters() / 1e6, 2),
                "summary dim": encoder.summary_dim,
                "patches": f"{encoder.patch_dim} @ /{encoder.patch_stride}",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    show_feature_maps(root, list(EXPERTS), "experts")


def timeline_chart(timeline: pd.DataFrame) -> alt.Chart:
    """Stages as bars over cumulative steps: EUPE's chain end to end, the direct baseline from 0."""
    bars = (
        alt.Chart(timeline)
        .mark_bar()
        .encode(
            x=alt.X("start:Q", title="cumulative steps"),
            x2="end:Q",
            y=alt.Y("stage:N", sort=list(timeline["stage"]), title=None),
            color=alt.Color("role:N", legend=alt.Legend(orient="bottom")),
            tooltip=list(timeline.columns),
        )
    )
    return bars.properties(height=alt.Step(28))


def show_overview(run: wr.Run) -> None:
    """The stage timeline (chart and table) and the run's config."""
    timeline = wr.timeline(run)
    if timeline.empty:
        st.info("This run has no stage folders yet.")
    else:
        st.altair_chart(timeline_chart(timeline), width="stretch")
        st.dataframe(timeline, hide_index=True)
    with st.expander("config.yaml"):
        st.code(yaml.safe_dump(wr.read_config(run), sort_keys=False), language="yaml")


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


def show_curves(run: wr.Run) -> None:
    """Loss terms per teacher for each chosen stage, then total loss, learning rate and throughput."""
    stages = [s for s in run.stages if not load_metrics(s.run, s.name, str(s.folder)).empty]
    if not stages:
        st.info("No metrics logged yet.")
        return
    chosen = st.multiselect("Stages", [s.name for s in stages], default=[s.name for s in stages])
    stages = [s for s in stages if s.name in chosen]
    all_terms = sorted(
        {t for s in stages for t in wr.loss_terms(load_metrics(s.run, s.name, str(s.folder)))["term"]}
    )
    terms = st.multiselect(
        "Loss terms", all_terms, default=[t for t in ("total",) if t in all_terms] or all_terms
    )
    for stage in stages:
        long = wr.loss_terms(load_metrics(stage.run, stage.name, str(stage.folder)))
        st.markdown(f"**{stage.name}** · {stage.role}")
        st.altair_chart(loss_chart(long[long["term"].isin(terms)]), width="stretch")
    for column, title in (
        ("loss", "Total loss"),
        ("lr", "Learning rate"),
        ("images_per_second", "Throughput (images/s)"),
    ):
        table = wr.curves(stages, column)
        if not table.empty:
            st.markdown(f"**{title}**")
            st.line_chart(table)


def show_scoreboards(run: wr.Run) -> None:
    """Every scoreboard written into the run, or how to make one."""
    boards = wr.find_scoreboards(run)
    if not boards:
        st.info(f"No scoreboard yet: `eupe eval --runs {run.folder} --out {run.folder}/eval`.")
    for board in boards:
        st.markdown(f"**{board.folder}**")
        st.dataframe(wr.scoreboard_frame(board.rows), hide_index=True)
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
    info = wr.checkpoint_info(stage)
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
    overview, curves, scoreboard, checkpoints = st.tabs(["Overview", "Curves", "Scoreboard", "Checkpoints"])
    with overview:
        show_overview(run)
    with curves:
        show_curves(run)
    with scoreboard:
        show_scoreboards(run)
    with checkpoints:
        show_checkpoints(root, run)


def styled_comparison(entries: dict[str, dict]) -> pd.io.formats.style.Styler:
    """Scoreboard rows side by side, the best value of each metric highlighted; with two, their difference."""
    values, best = wr.compare_frame(entries)
    if len(entries) == 2:
        first, second = values.columns
        values[f"{second} − {first}"] = values[second] - values[first]
        best[f"{second} − {first}"] = False
    return values.style.format("{:.3f}", na_rep="—").apply(
        lambda _: best.map(lambda flag: BEST_STYLE if flag else ""), axis=None
    )


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
    metrics = [load_metrics(s.run, s.name, str(s.folder)) for s in picked]
    common = [c for c in metrics[0].columns if c != "step" and all(c in m.columns for m in metrics[1:])]
    if common:
        column = st.selectbox("Curve", common, index=common.index("loss") if "loss" in common else 0)
        along = st.checkbox("Along the recipe (each stage after the one it starts from)", value=False)
        run_names = {s.run for s in picked}
        starts = wr.recipe_starts([r for r in runs if r.name in run_names]) if along else None
        st.line_chart(wr.curves(picked, column, starts), x_label="cumulative steps" if along else "step")
    run_of = {r.name: r for r in runs}
    rows = {s.label: wr.scoreboard_row(run_of[s.run], str(s.folder)) for s in picked}
    entries = {label: row for label, row in rows.items() if row is not None}
    st.subheader("Scoreboards")
    if entries:
        st.dataframe(styled_comparison(entries))
    missing = [label for label in chosen if label not in entries]
    if missing:
        st.info(f"No scoreboard row for {', '.join(missing)}: run `eupe eval` on their runs.")
    configs = {name: wr.read_config(run_of[name]) for name in dict.fromkeys(s.run for s in picked)}
    if len(configs) > 1:
        st.subheader("Config differences")
        st.dataframe(wr.config_differences(configs))


def main() -> None:
    """The page: the runs in the sidebar, then one run or the comparison (or the experts when no runs)."""
    st.set_page_config(page_title="EUPE runs", layout="wide")
    root = Path(st.sidebar.text_input("Runs folder", str(runs_root())))
    runs = load_runs(str(root))
    st.title("EUPE runs")
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
    show_run(root, next(r for r in runs if r.name == name))


main()
