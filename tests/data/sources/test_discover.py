import shutil
import zipfile
from pathlib import Path

import pytest

from geopera.core.errors import ArchiveError, BandSelectionError
from geopera.data.sources.discover import discover
from geopera.data.sources.files import find_rasters


def test_sources_group_by_signature(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    by_name = {s.name: s for s in archive.sources}
    assert set(by_name) == {
        "albers_30m",
        "landsat8_30m",
        "ortho_0p5m",
        "sentinel1_10m",
        "sentinel2_10m",
    }
    landsat = by_name["landsat8_30m"]
    assert len(landsat.items) == 2  # the two overlapping tiles share one source
    assert landsat.band_names == ["B4", "B3", "B2"]  # from the band descriptions
    assert landsat.res == (30.0, 30.0)
    assert landsat.dtype == "uint16"
    assert landsat.nodata == 0
    assert by_name["ortho_0p5m"].res == (0.5, 0.5)  # native grids are kept, never resampled
    assert by_name["albers_30m"].crs.to_epsg() is None  # custom WKT CRS
    assert by_name["albers_30m"].dtype == "int16"


def test_band_separate_files_become_one_item(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    s2 = archive.source("sentinel2_10m")
    assert len(s2.items) == 1
    item = s2.items[0]
    assert item.separate
    assert item.band_names == ["B02", "B03", "B04", "B08"]
    assert [Path(p).name for p in item.paths] == [
        f"T33TWM_20200101_{b}.tif" for b in ("B02", "B03", "B04", "B08")
    ]
    sar = archive.source("sentinel1_10m")
    assert sar.band_names == ["VH", "VV"]
    assert sar.dtype == "float32"


def test_broken_files_are_reported_not_fatal(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    reasons = {Path(p.path).name: p.reason for p in archive.problems}
    assert set(reasons) == {"truncated.tif", "nocrs.tif", "empty.tif"}
    assert "corrupt" in reasons["truncated.tif"]
    assert "no CRS" in reasons["nocrs.tif"]
    assert "0 bytes" in reasons["empty.tif"]
    # non-rasters are ignored silently
    assert not any(p.path.endswith((".txt", ".geojson")) for p in archive.problems)


def test_stacked_duplicate_of_band_separate_scene_is_dropped(tmp_path: Path) -> None:
    import numpy as np

    from tests.fakes.archive import write_raster

    data = np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32)
    for i, band in enumerate(("B2", "B3", "B4")):
        write_raster(tmp_path / f"LC08_X_{band}.TIF", data[i : i + 1], "EPSG:32621", (0, 0), 30)
    write_raster(tmp_path / "LC08_X.TIF", data, "EPSG:32621", (0, 0), 30)
    archive = discover([tmp_path])
    assert [len(s.items) for s in archive.sources] == [1]
    assert archive.sources[0].items[0].separate
    assert len(archive.problems) == 1
    assert archive.problems[0].path.endswith("LC08_X.TIF")
    assert "duplicate" in archive.problems[0].reason


def test_vsizip_paths(fake_archive: Path, tmp_path: Path) -> None:
    zip_path = tmp_path / "tiles.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for f in sorted((fake_archive / "landsat").glob("*.tif")):
            zf.write(f, f"inner/{f.name}")
    files, problems = find_rasters([f"/vsizip/{zip_path}"])
    assert files == [f"/vsizip/{zip_path}/inner/LC08_fake_{n}.tif" for n in ("A", "B")]
    assert problems == []
    archive = discover([f"/vsizip/{zip_path}/inner/LC08_fake_A.tif", str(zip_path)])
    assert [s.name for s in archive.sources] == ["landsat8_30m"]
    assert len(archive.source("landsat8_30m").items) == 2


def test_missing_path_and_empty_request(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover([tmp_path / "nope"])
    with pytest.raises(ArchiveError, match="no archive path"):
        discover([])


def test_select_lists_sources_when_bands_disagree(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    with pytest.raises(BandSelectionError) as err:
        archive.select(None)
    message = str(err.value)
    assert "sentinel2_10m: B02, B03, B04, B08" in message
    assert "landsat8_30m: B4, B3, B2" in message


def test_select_presets_names_and_indices(fake_archive: Path) -> None:
    archive = discover([fake_archive])
    chosen = dict((s.name, b) for s, b in archive.select("rgb"))
    assert chosen["sentinel2_10m"] == ["B04", "B03", "B02"]
    assert chosen["ortho_0p5m"] == ["1", "2", "3"]
    assert "albers_30m" not in chosen
    assert "sentinel1_10m" not in chosen
    picked = archive.select(["B08", "2"], sources=["sentinel2_10m"])
    assert picked[0][1] == ["B08", "B03"]
    with pytest.raises(
        BandSelectionError, match=r"no source has the requested bands \['B99'\].*B02, B03, B04, B08"
    ):
        archive.select(["B99"], sources=["sentinel2_10m"])
    with pytest.raises(ArchiveError, match="no source named 'nope'"):
        archive.select(None, sources=["nope"])


def test_shared_pretrain_folder(shared_data: Path) -> None:
    archive = discover([shared_data / "a_pretrain"])
    names = {s.name for s in archive.sources}
    # every raster of a_pretrain is usable: 18 files -> these sources
    assert {"landsat8_30m", "sentinel2_10m", "goes_20055m", "sar_4p5m", "pan1_0p5m"} <= names
    landsat8 = archive.source("landsat8_30m")
    assert landsat8.band_names == ["B2", "B3", "B4"]  # from the B2B3B4 file names
    assert len(landsat8.items) == 2
    assert archive.source("sentinel2_10m").band_names[1] == "B02"
    assert archive.source("goes_20055m").bounds_wgs84 is None  # full-disk CRS
    assert archive.problems == []
    n_files = sum(len(s.files) for s in archive.sources)
    assert n_files == len(list((shared_data / "a_pretrain").rglob("*.tif")))


def test_read_only_copy_is_fine(fake_archive: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ro"
    shutil.copytree(fake_archive / "landsat", copy)
    for f in copy.iterdir():
        f.chmod(0o444)
    assert [s.name for s in discover([copy]).sources] == ["landsat8_30m"]
