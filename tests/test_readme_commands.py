"""Every `eupe` command the README shows parses as written, and those that finish in seconds here run as
written against a tiny run (configs/toy.yaml and runs/toy stand for its config and folder)."""

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from apps.cli import build_parser, hoisted_overrides, main

README = Path(__file__).parents[1] / "README.md"
# commands that run in seconds on a tiny run; the rest (servers, scoring, seeds, corpora) only parse
RUNNABLE = (
    "pipeline",
    "distill",
    "teachers show",
    "teachers list",
    "export",
    "bench encoders",
    "bench distill",
)


def readme_commands() -> list[str]:
    """The README's `eupe ...` commands, fenced or inline, without comments and `[optional]` parts; bare
    command names (`eupe eval`, naming the command in prose) and templates (`<name>`) are left out."""
    text = README.read_text()
    found = [line.split("#")[0] for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.splitlines()]  # fmt: skip
    found += re.findall(r"`(eupe [^`]+)`", text)
    commands = []
    for command in found:
        words = shlex.split(re.sub(r"\[[^\]]*\]", "", command).strip())
        if words[:1] != ["eupe"] or any("<" in w or "..." in w for w in words):
            continue
        if all(w.isalpha() for w in words) and words != ["eupe"]:  # a command named in prose
            continue
        commands.append(shlex.join(words))
    return sorted(set(commands))


def test_the_readme_shows_the_commands_this_test_reads():
    commands = readme_commands()
    assert len(commands) >= 12
    assert any("--stages proxy student stages.proxy.steps=" in c for c in commands)  # the issue-17 trap


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_parses(command):
    words = shlex.split(command)[1:]
    if words == ["--help"]:
        return
    build_parser().parse_args(hoisted_overrides(words))  # SystemExit (an argparse error) fails the test


def write_toy_stand_in(tiny_run: Path, folder: Path) -> None:
    """configs/toy.yaml in `folder` for the commands that train new runs: the tiny run's config at the pace
    of configs/toy.yaml (its log, checkpoint and snapshot cadence), so the README's 300 and 60 proxy steps
    log and save as often as the toy's steps do (the tiny run's cadence of 2 suits its 4-step stages)."""
    config = yaml.safe_load((tiny_run / "config.yaml").read_text())
    toy = yaml.safe_load((README.parent / "configs" / "toy.yaml").read_text())["train"]
    config["train"] |= {key: toy[key] for key in ("log_every", "checkpoint_every", "snapshot_every")}
    (folder / "configs").mkdir()
    (folder / "configs" / "toy.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.slow
def test_the_quick_readme_commands_run_as_written_on_a_tiny_run(tiny_run, tmp_path, monkeypatch):
    """runs/toy is the tiny run with its feature cache (runs/.feature_cache, as `make demo` leaves it); a
    command resuming runs/toy gets that run's own config, the others the stand-in for configs/toy.yaml."""
    shutil.copytree(tiny_run, tmp_path / "runs" / "toy")
    shutil.copytree(tiny_run.parent / ".feature_cache", tmp_path / "runs" / ".feature_cache")
    write_toy_stand_in(tiny_run, tmp_path)
    monkeypatch.chdir(tmp_path)
    ran = []
    for command in readme_commands():
        resumes_toy = re.search(r"--out runs/toy( |$)", command) is not None
        as_tiny = re.sub(r"(?<=--config )(configs/toy\.yaml|toy)\b", "runs/toy/config.yaml", command)
        words = shlex.split(as_tiny if resumes_toy else command)[1:]
        placeholders = any(w.isupper() for w in words)  # PATH, ENCODER, ...
        if " ".join(words).startswith(RUNNABLE) and not placeholders:
            if "configs/paper.yaml" in words and "--dry-run" in words:  # its data.source is a placeholder
                with pytest.raises(SystemExit, match=r"problem.*image folder not found: /path/to/images"):
                    main(words)
            else:
                main(words)
            ran.append(command)
    assert len(ran) >= 6, ran
    assert (tmp_path / "runs" / "toy-proxy300" / "proxy" / "checkpoint").is_dir()
