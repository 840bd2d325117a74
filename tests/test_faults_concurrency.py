"""One process at a time per run folder: a second run into the same `--out` is refused in one line naming
the holder's process id, and the lock of a killed run is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults import kill_launch, wait_for
from test_faults_cli import error_line
from test_faults_stage_start import CONFIG, ENV, overrides, write_images

from apps.cli import main
from distill.metrics_log import metric_records
from distill.run_dir import RunDir, RunInUse

HOLD = "import sys, time; from distill.run_dir import RunDir\nwith RunDir(sys.argv[1]).locked():\n" \
       "    print('held', flush=True); time.sleep(600)"  # fmt: skip


def test_a_held_run_folder_is_refused_and_a_dead_holders_lock_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, start_new_session=True, env=ENV)  # fmt: skip
    assert holder.stdout.readline() == "held\n"
    with (
        pytest.raises(
            RunInUse, match=rf"run is in use by process {holder.pid} \(a run into the same --out\)"
        ),
        RunDir(tmp_path / "run").locked(),
    ):
        pass
    kill_launch(holder)  # killed: the OS drops its lock, its .lock file stays
    with RunDir(tmp_path / "run").locked():  # taken over
        assert (tmp_path / "run" / ".lock").read_text() == f"{os.getpid()}\n"


@pytest.mark.slow
def test_a_second_run_into_a_training_runs_folder_is_one_line(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    images = write_images(tmp_path / "images")
    out, marker = tmp_path / "run", tmp_path / "stopped"
    argv = ["distill", "--config", CONFIG, "--stage", "proxy", "--out", str(out), *overrides(images, True)]
    script = str(Path(__file__).with_name("faults.py"))
    first = subprocess.Popen([sys.executable, script, "first step", str(marker), "--", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True, env=ENV)  # fmt: skip
    wait_for(Path(f"{marker}.0"), first)  # training: the lock held, the statistics saved
    line = error_line(argv, capsys)
    assert line == f"eupe: error: {out} is in use by process {first.pid} (a run into the same --out): wait " \
                   "for it to end or use another --out"  # fmt: skip
    kill_launch(first)
    main(argv)  # the killed run's lock is taken over; the stage trains from its start
    assert [r["step"] for r in metric_records(out / "proxy")] == [0, 1]
