"""Faults in a pretraining run: files that break, NaNs, a full disk, two processes, resumes."""

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.faults.conftest import (
    finish,
    metric_steps,
    pretrain_args,
    run_cli,
    start,
    status,
    two_tile_archive,
    wait_until,
)
from tests.pretrain.test_pretrain_cli import losses

WEST, EAST = "LC08_tile_west.tif", "LC08_tile_east.tif"


def _losses(run: Path) -> list[float]:
    return list(losses(run).values())


def _truncate_mid_run(tmp_path: Path, steps: int, tiles: list[str]) -> tuple[Path, int, str]:
    """Pretrain on two tiles and truncate some of them after step 2; folder, exit code, stderr.

    Truncation stands for a copy in progress, a clean-up or a broken disk.
    """
    archive = two_tile_archive(tmp_path / "archive")
    run = tmp_path / "run"
    proc = start(*pretrain_args(archive, "--max-steps", str(steps), "--out", str(run)))
    assert wait_until(proc, lambda: len(metric_steps(run)) >= 2)
    for tile in tiles:
        os.truncate(archive / tile, 0)
    code, err = finish(proc)
    return run, code, err


@pytest.mark.slow
def test_a_file_truncated_mid_run_is_skipped_and_listed(tmp_path: Path) -> None:
    run, code, err = _truncate_mid_run(tmp_path, 40, [WEST])
    west = tmp_path / "archive" / WEST
    assert code == 0, err[-3000:]
    assert status(run)["status"] == "completed"
    problems = [json.loads(line) for line in (run / "problems.jsonl").read_text().splitlines()]
    assert [p["path"] for p in problems] == [str(west)]
    assert problems[0]["reason"]
    later = json.loads((run / "sampling" / "rank0.json").read_text())  # first batch: both tiles
    assert later["bounds"]
    assert all(torch.isfinite(torch.tensor(_losses(run))))


@pytest.mark.slow
def test_every_file_gone_stops_cleanly_with_a_checkpoint(tmp_path: Path) -> None:
    run, code, err = _truncate_mid_run(tmp_path, 200, [WEST, EAST])
    assert code == 2, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert "every source of the archive became unreadable" in line
    assert "last.ckpt" in line
    assert "--resume" in line
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] >= 2
    assert status(run)["status"] == "failed"
    assert not (run / "backbone.pth").exists()
    assert len((run / "problems.jsonl").read_text().splitlines()) == 2


def test_nan_pixels_below_the_qc_threshold_do_not_poison_the_loss(tmp_path: Path) -> None:
    # 3 % NaN pixels pass quality control (max_invalid 10 %); one NaN made a step's loss NaN
    archive = two_tile_archive(tmp_path / "archive", "float32", nan_fraction=0.03)
    run = tmp_path / "run"
    proc = run_cli(*pretrain_args(archive, "--max-steps", "3", "--out", str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = _losses(run)
    assert len(losses) == 3
    assert all(torch.isfinite(torch.tensor(losses)))
    assert "skipped" not in status(run)


def test_non_finite_steps_are_skipped_then_the_run_stops(tmp_path: Path) -> None:
    archive = two_tile_archive(tmp_path / "archive")
    run = tmp_path / "run"
    proc = run_cli(
        *pretrain_args(
            archive,
            "--max-steps",
            "30",
            "--out",
            str(run),
            "--set",
            "optim.lr=1e30",
            "--set",
            "optim.warmup_steps=0",
            "--set",
            "trainer.max_skipped_steps=3",
        )
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "skipped up to step" in proc.stderr
    assert ": non-finite" in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    # counted on the device, read at logging steps: at least the limit, then the run stops
    in_a_row = re.search(r"(\d+) steps in a row", line)
    assert in_a_row is not None, line
    assert 3 <= int(in_a_row.group(1)) < 30
    assert "last.ckpt" in line
    assert status(run)["status"] == "failed"
    assert status(run)["skipped_steps"]["count"] >= 3
    assert not (run / "backbone.pth").exists()
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    weights = [v for v in state["state_dict"].values() if v.is_floating_point()]
    assert all(bool(torch.isfinite(w).all()) for w in weights)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    archive = two_tile_archive(folder / "archive")
    run = folder / "run"
    proc = run_cli(*pretrain_args(archive, "--max-steps", "2", "--out", str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_resume_refuses_changed_keys_and_records_safe_ones(finished_run: Path) -> None:
    proc = run_cli(
        "pretrain",
        "--resume",
        str(finished_run),
        "--max-steps",
        "3",
        "--set",
        "optim.lr=0.5",
        "--batch-size",
        "8",
    )
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "optim.lr: " in line
    assert "-> 0.5" in line
    assert "data.batch_size: 4 -> 8" in line
    assert "trainer.max_steps" not in line.split("Only")[0]  # a safe key: not listed
    assert status(finished_run)["status"] == "completed"  # nothing changed
    assert "resumes" not in status(finished_run)


@pytest.mark.slow
def test_a_second_process_on_a_running_run_is_refused(finished_run: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = finished_run / ".lock"
        lock.write_text(
            json.dumps(
                {"pid": sleeper.pid, "host": os.uname().nodename, "since": "2026-11-27T00:00:00"}
            )
        )
        proc = run_cli(
            "pretrain", "--resume", str(finished_run), "--max-steps", "3", "--no-progress"
        )
        assert proc.returncode == 2
        assert f"in use by process {sleeper.pid}" in proc.stderr
        assert lock.is_file()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is dead now: the lock is stale, taken over; max_steps and log_every may change
    proc = run_cli(
        "pretrain",
        "--resume",
        str(finished_run),
        "--max-steps",
        "3",
        "--set",
        "trainer.log_every=2",
        "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stale lock" in proc.stderr
    assert not (finished_run / ".lock").exists()
    s = status(finished_run)
    assert s["status"] == "completed"
    assert s["steps"] == 3
    assert s["resumes"][-1]["step"] == 2
    assert s["resumes"][-1]["changed"] == {"trainer.max_steps": [2, 3], "trainer.log_every": [1, 2]}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_full_disk_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    archive = two_tile_archive(tmp_path / "archive")
    run = tmp_path / "run"
    proc = run_cli(*pretrain_args(archive, "--max-steps", "2", "--out", str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    before, size = _sha(last), last.stat().st_size
    # resume with room for everything but one more checkpoint
    code, err = finish(
        start(
            "pretrain",
            "--resume",
            str(run),
            "--max-steps",
            "4",
            "--no-progress",
            limit_bytes=size // 2,
        )
    )
    assert code == 2, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("geopera pretrain: error: could not write")
    assert "file-size limit" in line
    assert "kept:" in line
    assert "(step 2)" in line
    assert _sha(last) == before
    assert not [p.name for p in last.parent.iterdir() if p.name.startswith(".")]
    assert status(run)["status"] == "failed"
    assert not (run / ".lock").exists()
