"""The `eupe` command: figures, checks, and one-line errors."""

import pytest

from apps.cli import main


def test_teachers_show_writes_the_pca_figure(tiny_run, tmp_path):
    from PIL import Image

    out, companion = tmp_path / "show.png", tmp_path / "students.png"
    main(["teachers", "show", "--out", str(out), "--resolution", "96"])
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    students = [str(tiny_run / "multires"), str(tiny_run / "direct")]
    main(["teachers", "show", "--out", str(companion), "--resolution", "96", "--students", *students])
    with Image.open(out) as experts_only, Image.open(companion) as with_students:
        # input + 3 experts, then 2 students x (3 estimates + own features): 12 equal columns instead of 4
        assert with_students.height == experts_only.height
        assert with_students.width == pytest.approx(3 * experts_only.width, rel=0.02)


def test_bad_input_gives_one_line_errors(tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["pipeline", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")])
    assert str(info.value) == f"eupe: error: config file not found: {tmp_path / 'missing.yaml'}"
    with pytest.raises(SystemExit) as info:
        main(["distill", "--config", "configs/toy.yaml", "--stage", "proxy", "--out", str(tmp_path), "a.b=1"])
    assert str(info.value).startswith("eupe: error: unknown config key 'a'")
    with pytest.raises(SystemExit) as info:
        main(["teachers", "show", "--teachers", "nope", "--out", str(tmp_path / "x.png")])
    assert "unknown teacher 'nope'" in str(info.value)


def test_export_and_bench_encoders_on_a_run(tiny_run, tmp_path, capsys):
    from apps.cli import main

    for target in (tmp_path / "onnx" / "student.onnx", tmp_path / "timm" / "student"):
        main(["export", str(tiny_run / "multires"), "--out", str(target), "--resolution", "64"])
        out = capsys.readouterr().out
        assert target.exists() and "max |difference|" in out and "between a blank and a random image" in out
        difference = float(out.split("max |difference| ")[1].split()[0])
        assert difference < 1e-3
    with pytest.raises(SystemExit, match="eupe: error: semantic is an offline expert, not a timm model"):
        main(["export", "semantic", "--out", str(tmp_path / "semantic")])
    main(["bench", "encoders", "--encoders", str(tiny_run / "multires"), "--resolution", "64",
          "--repeats", "1", "--batch", "2", "--threads", "1", "--onnx"])  # fmt: skip
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["encoder", "params"]
    row = table[1].split()
    assert row[0] == "run/multires" and float(row[1]) > 0 and row[-1] != "-"  # ONNX latency measured
