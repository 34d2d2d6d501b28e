"""SIGKILL during ``archive shards``: ``--resume`` finishes the same shard set, no chip twice."""

import signal
from pathlib import Path

import geopandas as gpd
import pytest

from tests.faults.conftest import finish, run_cli, start, wait_until

SCENE = "c_change_detection/oscd_bercy/T1_S2L1C_13bands_10m.tif"


def _args(shared_data: Path, out: Path) -> list[str]:
    return ["archive", "shards", str(shared_data / SCENE), "--roi", "2.36,48.822,2.40,48.865",
            "--count", "700", "--size", "32", "--workers", "0", "--out", str(out)]  # fmt: skip


@pytest.mark.slow
def test_a_killed_shard_run_resumes_to_the_same_chips(shared_data: Path, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert run_cli(*_args(shared_data, whole)).returncode == 0
    out = tmp_path / "killed"
    proc = start(*_args(shared_data, out))
    first_part = tmp_path / ".killed.partial" / "parts" / "part-00000.parquet"
    assert wait_until(proc, first_part.is_file), "the run ended before its first part"
    proc.send_signal(signal.SIGKILL)
    finish(proc)
    assert not out.exists()
    resumed = run_cli(*_args(shared_data, out), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "part(s) kept" in resumed.stdout
    assert gpd.read_parquet(out / "chips.parquet").equals(gpd.read_parquet(whole / "chips.parquet"))
    assert not (tmp_path / ".killed.partial").exists()
