"""SIGKILL: a killed run resumes from its last complete checkpoint, with the same losses."""

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.faults.conftest import (
    ENV,
    finish,
    pretrain_args,
    run_cli,
    start,
    status,
    two_tile_archive,
    wait_until,
)
from tests.pretrain.test_pretrain_cli import losses

STEPS = 10
KILLS = 5
#: Checkpoint every step, so that kills land inside checkpoint writes too.
EVERY = ["--max-steps", str(STEPS), "--set", "trainer.checkpoint_every=1"]


def _never_looks_complete(run: Path) -> None:
    """A run folder is complete (run.json says so and backbone.pth loads) or does not say so."""
    if not (run / "run.json").is_file():
        return
    if status(run)["status"] == "completed":
        torch.load(run / "backbone.pth", map_location="cpu", weights_only=True)
    else:
        assert not (run / "backbone.pth").exists()
    folder = run / "checkpoints"
    for ckpt in folder.glob("*.ckpt") if folder.is_dir() else []:
        if not ckpt.name.startswith("."):  # under a final name: complete
            torch.load(ckpt, map_location="cpu", weights_only=True)


def _checklosses(run: Path, reference: dict[int, float]) -> None:
    got = losses(run)
    assert sorted(got) == list(range(STEPS))
    for step in range(STEPS):
        assert got[step] == pytest.approx(reference[step], abs=1e-6), step


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_tile_archive(tmp_path_factory.mktemp("faults") / "archive")


@pytest.fixture(scope="module")
def reference(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    run = tmp_path_factory.mktemp("reference") / "run"
    proc = run_cli(*pretrain_args(archive, *EVERY, "--out", str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return losses(run)


def _training(run: Path, since: float) -> Callable[[], bool]:
    """Whether the process has written run.json after ``since``: its run is under way."""

    def ready() -> bool:
        file = run / "run.json"
        return file.is_file() and file.stat().st_mtime > since

    return ready


@pytest.mark.slow
def test_sigkill_at_random_moments_of_training_then_resume(
    archive: Path, reference: dict[int, float], tmp_path: Path
) -> None:
    """Five kills, each at a random moment after the run says it is running.

    The moments fall in Lightning's set-up, the steps and the checkpoint writes, never in the
    imports: each kill costs a start, and none is wasted on a process that has not begun.
    """
    rng = random.Random(1234)
    kills, runs = 0, [tmp_path / "run0"]
    args = pretrain_args(archive, *EVERY, "--out", str(runs[-1]))
    while kills < KILLS:
        since = time.time() - 0.01
        proc = start(*args)
        if wait_until(proc, _training(runs[-1], since)):
            time.sleep(rng.uniform(0.0, 2.0))  # Lightning set-up, steps, checkpoint writes
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            kills += 1
        _never_looks_complete(runs[-1])
        started = (runs[-1] / "run.json").is_file()
        if started and status(runs[-1])["status"] == "completed":
            _checklosses(runs[-1], reference)  # done before the kill: next kills, new run
            runs.append(tmp_path / f"run{len(runs)}")
            args = pretrain_args(archive, *EVERY, "--out", str(runs[-1]))
        elif started:  # killed: resume (a run killed before its first checkpoint starts over)
            args = ["pretrain", "--resume", str(runs[-1]), "--no-progress"]
    if (runs[-1] / "run.json").is_file() and status(runs[-1])["status"] != "completed":
        code, err = finish(start(*args))
        assert code == 0, err[-3000:]
    for run in runs:
        if (run / "run.json").is_file():
            assert status(run)["status"] == "completed"
            _checklosses(run, reference)
            assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
            assert not (run / ".lock").exists()


KILL_IN_WRITE = """
import os, signal, sys
import torch
import geopera.core.outputs as outputs
from geopera.cli.main import main

calls = {"n": 0}
real_save = torch.save

def save(obj, f, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 4 and hasattr(f, "write"):  # the 4th torch.save: write half, then die
        real_save(obj, f, *args, **kwargs)
        f.flush()
        os.ftruncate(f.fileno(), f.tell() // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write(
    archive: Path, reference: dict[int, float], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_IN_WRITE, *pretrain_args(archive, *EVERY, "--out", str(run))],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert partial  # the write that was cut, under a hidden name only
    _never_looks_complete(run)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] >= 1
    code, err = finish(start("pretrain", "--resume", str(run), "--no-progress"))
    assert code == 0, err[-3000:]
    _checklosses(run, reference)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
