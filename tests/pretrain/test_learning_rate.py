"""The learning rate follows the global batch (the DINO rule), is recorded, and survives resumes."""

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from geopera.pretrain.schedules import lr_far_above_rule
from tests.conftest import CliResult

CliRunner = Callable[..., CliResult]
#: optim.lr per 256 images (the shipped CPU recipe's) at the tiny runs' batch of 4.
PER_256, BATCH = 1.6e-3, 4


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_rate_is_lr_times_the_global_batch_over_256(
    tiny_args: list[str], tmp_path: Path, cli: CliRunner
) -> None:
    scaled = tmp_path / "scaled"
    proc = cli(*tiny_args, "--max-steps", "3", "--out", str(scaled))
    assert proc.returncode == 0, proc.stderr
    effective = PER_256 * BATCH / 256
    assert (
        f"learning rate {effective:.3g} (optim.lr 0.0016 per 256 images x 4 / 256)" in proc.stderr
    )
    record = json.loads((scaled / "run.json").read_text())["learning_rate"]
    assert record == {"effective": effective, "lr": PER_256, "scaling": "linear", "global_batch": 4}
    # the same absolute rate, unscaled: the very same run
    absolute = tmp_path / "absolute"
    flags = ["--set", "optim.lr_scaling=none", "--set", f"optim.lr={effective}"]
    proc = cli(*tiny_args, *flags, "--max-steps", "3", "--out", str(absolute))
    assert proc.returncode == 0, proc.stderr
    assert "not scaled" in proc.stderr
    keys = ("step", "lr", "loss")
    one, two = ([{k: r[k] for k in keys} for r in _metrics(run)] for run in (scaled, absolute))
    assert one == two
    assert any(float(r["lr"]) > 0 for r in one)


def test_a_run_from_before_the_rule_resumes_with_its_absolute_rate(
    tiny_args: list[str], tmp_path: Path, cli: CliRunner
) -> None:
    run = tmp_path / "old"
    every = ["--set", "trainer.checkpoint_every=1"]
    proc = cli(*tiny_args, *every, "--max-steps", "2", "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    status = json.loads((run / "run.json").read_text())
    del status["learning_rate"]  # what a run made before the rule scaled rates holds
    (run / "run.json").write_text(json.dumps(status))
    proc = cli("pretrain", "--resume", str(run), "--max-steps", "3", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    record = json.loads((run / "run.json").read_text())["learning_rate"]
    assert record["effective"] == PER_256  # optim.lr itself, not x 4 / 256
    assert record["scaling"] == "none"
    assert "as the run started" in proc.stderr


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("optim.lr=0", "optim.lr must be a number above 0, got 0"),
        ("optim.lr=-1e-3", "optim.lr must be a number above 0, got -0.001"),
        ("optim.lr=null", "optim.lr must be a number above 0, got None"),
        ("optim.lr_scaling=sqrt", "optim.lr_scaling must be one of linear, none, got 'sqrt'"),
    ],
)
def test_a_bad_rate_is_one_line_and_writes_nothing(
    tiny_args: list[str], tmp_path: Path, cli: CliRunner, value: str, message: str
) -> None:
    run = tmp_path / "bad"
    proc = cli(*tiny_args, "--set", value, "--out", str(run))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not run.exists()


def test_the_collapse_alarm_names_a_rate_far_above_the_rule() -> None:
    """The CPU recipe's measured collapse: 5e-4 at batch 16 is 8x the paper's 1e-3 x 16 / 256."""
    assert lr_far_above_rule(1e-4, 16) is None  # the shipped CPU rate: 1.6x, not named
    cause = lr_far_above_rule(5e-4, 16)
    assert cause is not None
    assert cause.startswith("Likely cause: the learning rate 0.0005 is 8x what the paper's rule")
