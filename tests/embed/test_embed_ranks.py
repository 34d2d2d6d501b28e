"""``geopera embed --devices N``: chip rows shared by N processes, the outputs of one.

The processes talk over gloo on this CPU, as they would over NCCL on GPUs.
"""

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from geopera.core.ranks import share
from geopera.embed.manifest import EmbedError
from geopera.embed.run import _checked_rasters, _Job, _Settings
from tests.conftest import EMBEDDED_SCENE, CliResult

CliRunner = Callable[..., CliResult]


def test_two_processes_write_what_one_writes(
    backbone: Path, embedded: Path, shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    scene = shared_data / EMBEDDED_SCENE
    out = tmp_path / "two"
    proc = cli(
        "embed", "--weights", str(backbone), "--input", str(scene), "--chip-size", "64",
        "--out", str(out), "--devices", "2", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stem = Path(EMBEDDED_SCENE).stem  # `embedded` is the same call in one process
    with rasterio.open(embedded / f"{stem}.tif") as a, rasterio.open(out / f"{stem}.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.profile.get("nodata") is not None
        assert np.isnan(a.profile["nodata"])
        assert np.isnan(b.profile["nodata"])
        assert {**a.profile, "nodata": 0} == {**b.profile, "nodata": 0}  # NaN != NaN
    one = gpd.read_parquet(embedded / f"{stem}.parquet").sort_values("chip_id")
    two = gpd.read_parquet(out / f"{stem}.parquet").sort_values("chip_id")
    assert one.reset_index(drop=True).equals(two.reset_index(drop=True))
    assert not (tmp_path / ".two.partial").exists()
    assert not (tmp_path / ".two.lock").exists()


def test_more_processes_than_chip_rows_is_refused(backbone: Path, shared_data: Path) -> None:
    """Checked on every rank before any work (a failed rank's line ends every rank)."""
    scene = str(shared_data / EMBEDDED_SCENE)
    settings = _Settings([scene], str(backbone), None, "both", 224, "float16", None)
    job = _Job(settings, Path("unused"), "cpu", 8, False, False, False, False)
    assert len(_checked_rasters(job, torch.device("cpu"), 2)) == 1  # 2 chip rows of 224 px
    with pytest.raises(EmbedError, match="3 processes for 2 chip rows"):
        _checked_rasters(job, torch.device("cpu"), 3)


def test_shares_are_balanced_and_cover_everything() -> None:
    items = list(range(11))
    parts = [share(items, rank, 3) for rank in range(3)]
    assert sorted(x for p in parts for x in p) == items
    assert [len(p) for p in parts] == [4, 4, 3]


@pytest.mark.slow
def test_under_torchrun_each_rank_runs_the_same_command(
    backbone: Path, embedded: Path, shared_data: Path, tmp_path: Path
) -> None:
    scene = shared_data / EMBEDDED_SCENE
    out = tmp_path / "tr"
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("torchrun")), "--nnodes", "1",
            "--nproc-per-node", "2", "--master-port", "29517", "-m", "geopera", "embed",
            "--weights", str(backbone), "--input", str(scene), "--chip-size", "64",
            "--out", str(out), "--devices", "2", "--device", "cpu", "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    stem = Path(EMBEDDED_SCENE).stem
    with rasterio.open(embedded / f"{stem}.tif") as a, rasterio.open(out / f"{stem}.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
