"""Dates of rasters, and `geopera embed --archive` (the CLI, run in-process)."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from geopera.cli.main import main
from geopera.embed.rasters import raster_datetime
from geopera.embed.run import embed
from tests.fakes.archive import write_raster


def test_dates_come_from_the_name_or_the_tiff_tag(tmp_path: Path) -> None:
    data = np.ones((1, 16, 16), dtype=np.uint16)
    named = tmp_path / "LC08_L1TP_224078_20200518_20200518_01_RT.tif"
    write_raster(named, data, "EPSG:32621", (0.0, 16.0), 1.0)
    assert raster_datetime(str(named)) == "2020-05-18"
    tagged = tmp_path / "scene.tif"
    write_raster(tagged, data, "EPSG:32621", (0.0, 16.0), 1.0)
    with rasterio.open(tagged, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2021:07:04 10:30:00")
    assert raster_datetime(str(tagged)) == "2021-07-04T10:30:00"
    plain = tmp_path / "tile_123.tif"
    write_raster(plain, data, "EPSG:32621", (0.0, 16.0), 1.0)
    assert raster_datetime(str(plain)) is None


def test_archive_mode_embeds_every_stacked_raster(fake_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb"
    code = main(
        [
            "embed",
            "--archive",
            str(fake_archive / "landsat"),
            "--out",
            str(out),
            "--chip-size",
            "32",
            "--level",
            "chip",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = gpd.pd.read_json(out / "embeddings.json", typ="series")
    names = sorted(r["name"] for r in manifest["rasters"])
    assert names == ["LC08_fake_A", "LC08_fake_B"]
    for name in names:
        chips = gpd.read_parquet(out / f"{name}.parquet")
        assert len(chips) > 0
        assert chips.crs.to_epsg() == 32621
        assert chips["chip_id"].str.startswith(f"{name}:").all()


def test_nodata_given_on_the_command_line_masks_fill(tmp_path: Path) -> None:
    """A scene whose file sets no nodata, with a zero-filled left half."""
    rng = np.random.default_rng(0)
    data = rng.integers(100, 5000, (3, 64, 64)).astype(np.uint16)
    data[:, :, :32] = 0
    scene = tmp_path / "scene.tif"
    write_raster(scene, data, "EPSG:32621", (0.0, 64.0), 10.0)
    embed(
        [str(scene)], tmp_path / "a", weights="vit_small_patch16_224", chip_size=32, level="patch"
    )
    embed(
        [str(scene)],
        tmp_path / "b",
        weights="vit_small_patch16_224",
        chip_size=32,
        level="patch",
        nodata=0,
    )
    with (
        rasterio.open(tmp_path / "a" / "scene.tif") as a,
        rasterio.open(tmp_path / "b" / "scene.tif") as b,
    ):
        plain, masked = a.read(1), b.read(1)
    assert not np.isnan(plain).any()
    assert np.isnan(masked[:, :2]).all()
    assert not np.isnan(masked[:, 2:]).any()


def test_the_files_own_nodata_comes_before_the_option(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(100, 5000, (3, 64, 64)).astype(np.uint16)
    data[:, :, 32:] = 9999
    scene = tmp_path / "scene.tif"
    write_raster(scene, data, "EPSG:32621", (0.0, 64.0), 10.0, nodata=9999)
    summary = embed(
        [str(scene)],
        tmp_path / "e",
        weights="vit_small_patch16_224",
        chip_size=32,
        level="both",
        nodata=0,
    )
    assert summary.manifest.rasters[0].nodata == 9999
    with rasterio.open(tmp_path / "e" / "scene.tif") as ds:
        tokens = ds.read(1)
    assert np.isnan(tokens[:, 2:]).all()
    assert not np.isnan(tokens[:, :2]).any()
    chips = gpd.read_parquet(tmp_path / "e" / "scene.parquet")
    assert sorted(chips["col"]) == [0, 0]  # the nodata half got no chip (and no forward pass)


def test_resume_with_nothing_to_resume_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = np.ones((3, 32, 32), dtype=np.uint16)
    write_raster(tmp_path / "s.tif", data, "EPSG:32621", (0.0, 32.0), 10.0)
    code = main(
        [
            "embed",
            "--input",
            str(tmp_path / "s.tif"),
            "--out",
            str(tmp_path / "o"),
            "--resume",
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "nothing to resume" in err[0]
    assert not (tmp_path / "o").exists()
