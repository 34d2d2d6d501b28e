"""``geopera archive shards`` on a real 13-band Sentinel-2 scene, as a user runs it."""

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from litdata import StreamingDataset

from geopera.archive import shard_parts as shard_writer
from geopera.cli.main import main
from geopera.data.roi import load_roi
from tests.conftest import CliResult

SCENE = "c_change_detection/oscd_bercy/T1_S2L1C_13bands_10m.tif"
ROI = "2.36,48.822,2.40,48.865"


def _args(shared_data: Path, out: Path, count: int, *more: str) -> list[str]:
    scene = str(shared_data / SCENE)
    return ["archive", "shards", scene, "--roi", ROI, "--count", str(count), "--size", "128",
            "--out", str(out), "--workers", "0", *more]  # fmt: skip


def test_shards_of_a_sentinel2_scene(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    out = tmp_path / "shards"
    result = cli(*_args(shared_data, out, 64))
    assert result.returncode == 0, result.stderr
    assert f"geopera pretrain --shards {out}" in result.stdout
    chips = gpd.read_parquet(out / "chips.parquet")
    assert len(chips) == 64
    assert chips.crs.to_epsg() == 4326
    assert set(chips["source"]) == {
        json.loads((out / "shards.json").read_text())["sources"][0]["name"]
    }
    roi = load_roi(ROI).to_crs("EPSG:4326")
    assert all(roi.buffer(1e-6).contains(g) for g in chips.geometry)
    record = json.loads((out / "shards.json").read_text())
    assert (record["count"], record["size"], record["dtype"]) == (64, 128, "uint16")
    assert len(record["bands"]) == 13
    identities = record["identities"]
    assert identities[3]["common"] == "red"
    assert abs(identities[3]["center_um"] - 0.665) < 0.01
    stream = StreamingDataset(f"local:{out / 'data'}", cache_dir=str(tmp_path / "cache"))
    assert len(stream) == 64
    item = stream[5]
    assert item["image"].dtype == np.uint16
    assert item["image"].shape == (13, 128, 128)
    row = chips.iloc[int(item["chip"])]
    with rasterio.open(shared_data / SCENE) as src:  # the chip is the scene's pixels there
        window = rasterio.windows.from_bounds(row.minx, row.miny, row.maxx, row.maxy, src.transform)
        expected = src.read(window=window.round_offsets().round_lengths())
    np.testing.assert_array_equal(item["image"], expected)
    again = cli(*_args(shared_data, out, 64))
    assert again.returncode == 2
    assert "exists" in again.stderr or "not empty" in again.stderr


def test_a_killed_run_resumes_without_duplicates(
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shard_writer, "PART", 16)
    whole = tmp_path / "whole"
    assert cli(*_args(shared_data, whole, 40)).returncode == 0
    write_part = shard_writer._write_part
    calls = []

    def dies_on_the_third_part(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stands for a kill: nothing after this part runs
        write_part(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(shard_writer, "_write_part", dies_on_the_third_part)
    out = tmp_path / "killed"
    assert main(_args(shared_data, out, 40)) == 130  # what Ctrl-C or a kill leaves
    assert not out.exists()
    refused = cli(*_args(shared_data, out, 40))
    assert refused.returncode == 2
    assert "--resume" in refused.stderr
    monkeypatch.setattr(shard_writer, "_write_part", write_part)
    other = cli(*_args(shared_data, out, 40, "--resume", "--seed", "1"))
    assert other.returncode == 2
    assert "seed: 0 -> 1" in other.stderr
    resumed = cli(*_args(shared_data, out, 40, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "2 part(s) kept" in resumed.stdout
    left, right = gpd.read_parquet(whole / "chips.parquet"), gpd.read_parquet(out / "chips.parquet")
    assert left.equals(right)
    assert sorted(
        int(StreamingDataset(f"local:{out / 'data'}", cache_dir=str(tmp_path / "c2"))[i]["chip"])
        for i in range(40)
    ) == list(range(40))
    nothing = cli(*_args(shared_data, tmp_path / "never", 8, "--resume"))
    assert nothing.returncode == 2
    assert "no interrupted shard run" in nothing.stderr


@pytest.mark.slow
def test_processes_write_what_one_writes(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """3 parts shared by 2 processes (gloo on this CPU): the shard set of one process."""
    from tests.conftest import torchrun

    def args(out: Path) -> list[str]:
        return ["archive", "shards", str(shared_data / SCENE), "--roi", ROI, "--count", "600",
                "--size", "32", "--workers", "0", "--out", str(out)]  # fmt: skip

    one, two, three = tmp_path / "one", tmp_path / "two", tmp_path / "three"
    assert cli(*args(one)).returncode == 0
    result = cli(*args(two), "--devices", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("wrote 600 chips") == 1
    launched = torchrun("-m", "geopera", *args(three), "--devices", "2")
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("wrote 600 chips") == 1  # rank 0 reports
    first = gpd.read_parquet(one / "chips.parquet")
    for out in (two, three):
        assert gpd.read_parquet(out / "chips.parquet").equals(first)
        record = json.loads((out / "shards.json").read_text())
        assert record == json.loads((one / "shards.json").read_text())
        assert not (tmp_path / f".{out.name}.partial").exists()
