"""``geopera embed --devices N``: chip rows shared by N processes, the outputs of one.

The processes talk over gloo on this CPU, as they would over NCCL on GPUs.
"""

import os
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
from geopera.embed.errors import EmbedError
from geopera.embed.run import _checked_rasters, _Job, _Settings
from tests.conftest import EMBEDDED_SCENE, CliResult, free_port, torchrun

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


def _launched_as(rank: int, port: int) -> dict[str, str]:
    """The environment torchrun gives rank ``rank`` of 2 (without starting the other)."""
    return {
        **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0",
        "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "test",
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GEOPERA_RANKS_TIMEOUT": "2",
    }  # fmt: skip


def test_a_rank_launched_without_the_others_names_them_and_writes_nothing(
    backbone: Path, shared_data: Path, tmp_path: Path
) -> None:
    """As when srun or a hand-made launch starts fewer processes than --devices asks for."""
    out = tmp_path / "alone"
    args = [
        str(Path(sys.executable).with_name("geopera")), "embed", "--weights", str(backbone),
        "--input", str(shared_data / EMBEDDED_SCENE), "--chip-size", "64", "--out", str(out),
        "--devices", "2", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    port = free_port()
    for rank, message in (
        (0, "rank 1 of 2 did not start within 2 s"),
        (1, "rank 1 of 2: nothing answered at 127.0.0.1"),
    ):
        proc = subprocess.run(args, env=_launched_as(rank, port), capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert list(tmp_path.iterdir()) == []  # no output, no work folder, no lock


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
    proc = torchrun(
        "-m", "geopera", "embed", "--weights", str(backbone), "--input", str(scene),
        "--chip-size", "64", "--out", str(out), "--devices", "2", "--device", "cpu",
        "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: ") == 1  # rank 0 reports
    _same_as_one_process(embedded, out)


#: geopera embed, but rank 1 is killed (SIGKILL) as it saves its second chip row.
KILL_RANK_ONE = """
import os, signal, sys
import geopera.embed.run as run
from geopera.cli.main import main

saved = {"rows": 0}
real_save = run.save_row

def save_row(path, row):
    if os.environ["RANK"] == "1":
        saved["rows"] += 1
        if saved["rows"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    real_save(path, row)

run.save_row = save_row
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_resume_after_a_rank_is_killed_redoes_only_the_missing_rows(
    backbone: Path, embedded: Path, shared_data: Path, tmp_path: Path, cli: CliRunner
) -> None:
    scene = shared_data / EMBEDDED_SCENE
    out = tmp_path / "killed"
    args = [
        "embed", "--weights", str(backbone), "--input", str(scene), "--chip-size", "64",
        "--out", str(out), "--devices", "2", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    script = tmp_path / "kill_rank_one.py"
    script.write_text(KILL_RANK_ONE)
    proc = torchrun(str(script), *args)
    assert proc.returncode != 0  # torchrun stops rank 0 when rank 1 dies
    assert not out.exists()
    rows = tmp_path / ".killed.partial" / "rows" / Path(EMBEDDED_SCENE).stem
    before = {p.name: p.stat().st_mtime_ns for p in rows.glob("*.npz")}
    odd = {name for name in before if int(name[1:7]) % 2 == 1}
    assert len(odd) == 1  # rank 1 saved its first row (rows 1, 3, ...) and died at the next
    resumed = cli(*args, "--resume")  # two processes again, started by geopera this time
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {len(before)} chip rows" in resumed.stdout + resumed.stderr
    _same_as_one_process(embedded, out)


def _same_as_one_process(embedded: Path, out: Path) -> None:
    """The COG of ``out`` equals the one-process run's (``embedded``), pixel for pixel."""
    stem = Path(EMBEDDED_SCENE).stem
    with rasterio.open(embedded / f"{stem}.tif") as a, rasterio.open(out / f"{stem}.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
