"""`geopera pretrain` as a user runs it: the run directory, resume after a kill, DDP, errors."""

import csv
import json
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import timm
import torch
import yaml
from PIL import Image

from tests.conftest import CliResult, torchrun
from tests.pretrain.conftest import geopera_exe, run_cli

CliRunner = Callable[..., CliResult]

REPO = Path(__file__).resolve().parents[2]


def losses(run: Path) -> dict[int, float]:
    with open(run / "metrics.csv", newline="") as fh:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(fh)}


def test_run_directory_holds_everything(tiny_args: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    # collapse thresholds no run can meet: the alarm must go off after 2 checks
    alarm = ["--set", "trainer.collapse_std=1e9", "--set", "trainer.collapse_patience=2"]
    proc = run_cli(
        *tiny_args,
        "--max-steps",
        "4",
        "--out",
        str(run),
        "--set",
        "trainer.checkpoint_every=2",
        *alarm,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "COLLAPSE ALARM at step 1" in proc.stderr
    for lightning_line in ("Tip:", "GPU available", "LeafSpec", "`Trainer.fit` stopped"):
        assert lightning_line not in proc.stderr  # geopera's own lines only
    assert f"Outputs in {run}" in proc.stdout
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "completed"
    assert status["steps"] == 4
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["trainer"]["max_steps"] == 4
    assert config["model"]["prototypes"] == 64
    inventory = json.loads((run / "inventory.json").read_text())
    assert [s["name"] for s in inventory["sources"]] == ["landsat8_30m"]
    assert "landsat8_30m" in json.loads((run / "stats.json").read_text())["sources"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step000002.ckpt",
        "step000004.ckpt",
    ]
    rows = losses(run)
    assert sorted(rows) == [0, 1, 2, 3]
    assert status["collapse_alarm"]["step"] == 1
    with open(run / "metrics.csv", newline="") as fh:
        flags = [int(r["collapse_alarm"]) for r in csv.DictReader(fh)]
    assert flags == [0, 1, 1, 1]
    with open(run / "metrics.csv", newline="") as fh:
        header = next(csv.reader(fh))
    for column in (
        "lr",
        "teacher_temp",
        "momentum",
        "teacher_std",
        "teacher_entropy",
        "teacher_rank",
        "images_per_s",
        "rejected_rate",
    ):
        assert column in header
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("views_and_masks.png", "pca_start.png", "pca_end.png", "loss_curves.png"):
        with Image.open(run / "previews" / name) as image:
            assert image.format == "PNG"
    meta = json.loads((run / "backbone.json").read_text())
    assert meta["ssl_method"] == "pera"
    assert meta["bands"] == ["B4", "B3", "B2"]
    assert meta["in_chans"] == 3
    assert meta["steps"] == 4
    # the card describes what the weights trained with: the statistics' normalisation
    trained = json.loads((run / "stats.json").read_text())["normalisation"]
    assert meta["normalisation"]["mean"] == pytest.approx(trained["raw_mean"], rel=1e-5)
    assert meta["normalisation"]["std"] == pytest.approx(trained["raw_std"], rel=1e-5)
    model = timm.create_model(
        meta["model"],
        in_chans=meta["in_chans"],
        img_size=meta["img_size"],
        num_classes=0,
        **meta["model_kwargs"],
    )
    model.load_state_dict(torch.load(run / "backbone.pth", weights_only=True))
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 32)


def test_a_completed_run_extends_from_its_final_step(tiny_args: list[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    every = ["--set", "trainer.checkpoint_every=2"]  # 3 steps: the end is no periodic step
    proc = run_cli(*tiny_args, "--max-steps", "3", "--out", str(run), *every)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    before = losses(run)
    proc = run_cli("pretrain", "--resume", str(run), "--max-steps", "4", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((run / "run.json").read_text())
    assert [r["step"] for r in status["resumes"]] == [3]  # not step 2, trained again
    assert status["steps"] == 4
    after = losses(run)
    assert sorted(after) == [0, 1, 2, 3]
    assert {k: after[k] for k in before} == before


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_losses(tiny_args: list[str], tmp_path: Path) -> None:
    steps = "8"
    reference = tmp_path / "reference"
    proc = run_cli(*tiny_args, "--max-steps", steps, "--out", str(reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed = tmp_path / "killed"
    child = subprocess.Popen(
        [geopera_exe(), *tiny_args, "--max-steps", steps, "--out", str(killed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if (killed / "metrics.csv").is_file() and len(losses(killed)) >= 3:
            child.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    _, err = child.communicate(timeout=240)
    assert child.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "--resume" in err
    assert json.loads((killed / "run.json").read_text())["status"] == "interrupted"
    assert not (killed / "backbone.pth").exists()  # no half-done run that looks complete
    stopped_at = json.loads((killed / "run.json").read_text())["steps"]
    assert 3 <= stopped_at < 8
    proc = run_cli("pretrain", "--resume", str(killed), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((killed / "run.json").read_text())["status"] == "completed"
    expected, got = losses(reference), losses(killed)
    assert sorted(got) == list(range(8))
    for step in range(8):
        assert got[step] == pytest.approx(expected[step], abs=1e-6), step


@pytest.mark.slow
def test_ddp_ranks_draw_different_patches(tiny_args: list[str], tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    proc = run_cli(
        *tiny_args, "--max-steps", "2", "--devices", "2", "--accelerator", "cpu", "--out", str(run)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((run / "sampling" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    first, second = ({tuple(b) for b in r["bounds"]} for r in ranks)
    assert first.isdisjoint(second)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_under_torchrun_two_ranks_make_one_run(tiny_args: list[str], tmp_path: Path) -> None:
    run = tmp_path / "tr"
    proc = torchrun(
        "-m", "geopera", *tiny_args, "--max-steps", "2", "--devices", "2", "--accelerator",
        "cpu", "--out", str(run), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["tr"]  # one run folder
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert len(list(run.glob("backbone*.pth"))) == 1
    ranks = [json.loads((run / "sampling" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bands", "B9"], "no source has the requested bands"),
        (["--roi", "10,45,11,46"], "intersects no source"),
        (["--config", "missing.yaml"], "does not exist"),
        (["--set", "optim.nope=1"], "unknown key optim.nope"),
    ],
)
def test_bad_input_ends_in_one_line_and_writes_nothing(
    tiny_args: list[str], tmp_path: Path, extra: list[str], message: str
) -> None:
    run = tmp_path / "run"
    proc = run_cli(*tiny_args, *extra, "--out", str(run))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not run.exists()


@pytest.mark.slow
def test_unreadable_config_and_existing_output(
    tiny_args: list[str], tmp_path: Path, cli: CliRunner
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed")
    proc = run_cli(*tiny_args, "--config", str(bad), "--out", str(tmp_path / "r1"))
    assert proc.returncode == 2
    assert "not valid YAML" in proc.stderr
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    proc = cli(*tiny_args, "--out", str(existing))
    assert proc.returncode == 2
    assert "already exists and is not empty" in proc.stderr
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_resume_of_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    proc = run_cli("pretrain", "--resume", str(tmp_path), "--bands", "rgb")
    assert proc.returncode == 2
    assert "is not a geopera run directory" in proc.stderr
    env_free = os.environ.get("GEOPERA_RUN_DIR") is None
    assert env_free


def test_bf16_mixed_precision_with_gradient_clipping_trains(
    tiny_args: list[str], tmp_path: Path
) -> None:
    # What a CUDA run does by default (precision auto -> bf16-mixed, clip_grad 3): the first
    # device check failed at step 1 because Lightning refuses to clip a fused AdamW's gradients.
    run = tmp_path / "run"
    proc = run_cli(
        *tiny_args, "--max-steps", "2", "--out", str(run), "--set", "trainer.precision=bf16-mixed"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 1]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
