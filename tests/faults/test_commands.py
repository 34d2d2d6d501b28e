"""Signals, SIGKILL and a full disk in `finetune` (and the staging folders they leave)."""

import signal
import time
from pathlib import Path

import pytest

from tests.faults.conftest import finish, hidden, start, wait_until
from tests.finetune.conftest import TINY_VIT


def _finetune(shared_data: Path, out: Path, steps: str = "2") -> list[str]:
    s = shared_data
    return [
        "finetune",
        "segmentation",
        "--images",
        str(s / "a_pretrain/sentinel2_eolearn_slovenia/S2L1C_reference_scene0.tif"),
        "--labels",
        str(s / "b_segmentation/eolearn_slovenia_lulc/LULC.gpkg"),
        "--class-field",
        "LULC_ID",
        "--set",
        "data.chip_size=32",
        "--set",
        "data.block_chips=1",
        "--max-steps",
        steps,
        "--out",
        str(out),
        *TINY_VIT,
    ]


def _staging(out: Path) -> bool:
    return any(p.name.startswith(f".{out.name}.partial-") for p in out.parent.iterdir())


@pytest.mark.slow
def test_sigterm_stops_finetune_and_leaves_nothing(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = start(*_finetune(shared_data, out, steps="400"))
    assert wait_until(proc, lambda: _staging(out))
    time.sleep(1.0)  # inside the training loop
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("geopera finetune: SIGTERM: fine-tuning (segmentation) stopped")
    assert "nothing was kept" in line
    assert not out.exists()
    assert hidden(tmp_path) == []


@pytest.mark.slow
def test_finetune_after_a_sigkill_succeeds_and_cleans_up(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    proc = start(*_finetune(shared_data, out, steps="400"))
    assert wait_until(proc, lambda: _staging(out))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not out.exists()  # never a partial folder under the final name
    assert len(hidden(tmp_path)) == 1  # what SIGKILL leaves: the hidden staging folder
    code, err = finish(start(*_finetune(shared_data, out)))
    assert code == 0, err[-3000:]
    assert (out / "model.ckpt").is_file()
    assert hidden(tmp_path) == []  # the dead run's staging folder was removed


@pytest.mark.slow
def test_full_disk_in_finetune_is_one_line_and_leaves_nothing(
    shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    code, err = finish(start(*_finetune(shared_data, out), limit_bytes=200_000))
    assert code == 2, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("geopera finetune: error: ")
    assert "file-size limit" in line
    assert not out.exists()
    assert hidden(tmp_path) == []
