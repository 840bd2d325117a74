"""The `eupe` command: figures, checks, and one-line errors."""

import pytest

from distill.cli import main


def test_teachers_show_writes_the_pca_figure(tmp_path):
    out = tmp_path / "show.png"
    main(["teachers", "show", "--out", str(out), "--resolution", "96"])
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
