"""The command line's entry points and help."""

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from geopera.cli.main import build_parser
from tests.conftest import CliResult

CliRunner = Callable[..., CliResult]


def test_python_dash_m_geopera_is_the_cli() -> None:
    # Machines without the console script (the bare GPU machine) run geopera this way.
    out = subprocess.run(
        [sys.executable, "-m", "geopera", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for command in ("pretrain", "finetune", "predict", "publish", "embed"):
        assert command in out.stdout
    bad = subprocess.run([sys.executable, "-m", "geopera", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "invalid choice" in bad.stderr


def _command_lines(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    """Every command and sub-command of a parser, as argument lists."""
    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.extend(_command_lines(sub, [*prefix, name]))
    return out


def test_every_help_prints_and_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    lines = _command_lines(build_parser(), [])
    assert ["finetune", "segmentation"] in lines  # sub-commands are reached
    assert ["embed", "similar"] in lines
    for argv in lines:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*argv, "--help"])
        assert done.value.code == 0, argv
        text = capsys.readouterr().out
        assert "usage: geopera" in text, argv
        assert "%%" not in text, argv  # argparse does not format descriptions
        assert "%(" not in text, argv


def test_a_path_too_long_to_look_up_is_a_one_line_error(cli: CliRunner, tmp_path: Path) -> None:
    # Python 3.12's Path.is_dir()/is_file() raise ENAMETOOLONG instead of answering False
    long = "x" * 300
    out = tmp_path / "out"
    commands = [
        ["evaluate", "knn", "--weights", "vit_small_patch16_224", "--data", long,
         "--labels", "labels.tif", "--chip-size", "32", "--out", str(out)],
        ["embed", "--weights", "vit_small_patch16_224", "--input", long, "--out", str(out)],
    ]  # fmt: skip
    for argv in commands:
        proc = cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert "(300 bytes) is longer than the file system allows" in lines[0]
        assert "Traceback" not in proc.stderr
        assert not out.exists()
