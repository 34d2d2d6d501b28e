import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.wkt
from rasterio.windows import from_bounds

from geopera.cli.main import main
from tests.conftest import CliResult

ROI = "EPSG:32621;POLYGON((700300 -2795400, 705400 -2795400, 705400 -2790300, 700300 -2790300, 700300 -2795400))"  # noqa: E501


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script, as a user does."""
    exe = Path(sys.executable).with_name("geopera")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=False)


def test_inspect_json_on_shared_data(shared_data: Path) -> None:
    roi = shared_data / "c_change_detection" / "oscd_bercy" / "bercy_aoi.geojson"
    proc = run_cli("archive", "inspect", str(shared_data / "a_pretrain"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    names = [s["name"] for s in report["sources"]]
    assert names == [
        "clm_10m",
        "dem_10m",
        "goes_20055m",
        "landsat8_30m",
        "ms1_1m",
        "ndvi_10m",
        "pan1_0p5m",
        "rgb_300m",
        "rgb_4p5m",
        "rmnp_0p0015deg",
        "rmnp_0p0028deg",
        "sample_30m",
        "sar_4p5m",
        "sentinel2_10m",
    ]
    for row in report["sources"]:
        assert set(row) >= {"name", "files", "crs", "res", "bands", "dtype", "bounds_wgs84"}
        assert all(Path(f).is_file() for f in row["files"])
    assert report["problems"] == []
    proc = run_cli(
        "archive", "inspect", str(shared_data / "c_change_detection"), "--roi", str(roi), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    overlaps = {s["name"]: s["roi_overlap"]["fraction_of_roi"] for s in report["sources"]}
    assert overlaps
    assert all(0.9 < v <= 1.0 for v in overlaps.values())
    assert [Path(p["path"]).name for p in report["problems"]] == []
    # an ROI over Rotterdam, with the full-disk GOES source in the archive: no warnings, and
    # only the SpaceNet sources overlap
    proc = run_cli(
        "archive",
        "inspect",
        str(shared_data / "a_pretrain"),
        "--roi",
        "4.34,51.86,4.36,51.90",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr
    overlapping = {
        s["name"]
        for s in json.loads(proc.stdout)["sources"]
        if s["roi_overlap"]["fraction_of_roi"] > 0
    }
    assert overlapping == {"ms1_1m", "pan1_0p5m", "rgb_4p5m", "sar_4p5m"}


def test_inspect_table_lists_sources_and_problems(
    fake_archive: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "inspect", str(fake_archive), "--roi", ROI]) == 0
    out = capsys.readouterr().out
    for name in ("landsat8_30m", "sentinel2_10m", "ortho_0p5m", "truncated.tif", "nocrs.tif"):
        assert name in out
    # ROI 5100 m square; tiles A and B (3840 m, offset 1920 m) cover this much of it:
    covered = 3540**2 + 3480**2 - 1920**2
    assert f"{covered / 5100**2:.0%}" in out
    assert "81%" in out


def test_inspect_table_shows_bracketed_names_as_text(
    fake_archive: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shutil.copytree(fake_archive, tmp_path / "a")
    (tmp_path / "a" / "[red]broken.tif").write_bytes(b"not a tiff")  # rich would read markup
    monkeypatch.chdir(tmp_path)  # a short path: the table does not fold it
    assert main(["archive", "inspect", "a"]) == 0
    assert "[red]broken.tif" in capsys.readouterr().out


def test_sample_writes_georeferenced_chips_inside_roi(fake_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "chips"
    proc = run_cli(
        "archive",
        "sample",
        str(fake_archive),
        "--roi",
        ROI,
        "--size",
        "16",
        "--count",
        "12",
        "--out",
        str(out),
        "--seed",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    assert "wrote 12 chips" in proc.stdout
    index = json.loads((out / "chips.geojson").read_text())
    assert len(index["features"]) == 12
    roi = shapely.wkt.loads(ROI.split(";", 1)[1])
    for feature in index["features"]:
        props = feature["properties"]
        assert props["source"] == "landsat8_30m"
        assert props["crs"] == "EPSG:32621"
        box = shapely.box(*props["bounds"])
        assert box.within(roi)
        with rasterio.open(out / props["path"]) as chip:
            assert chip.crs.to_epsg() == 32621
            assert chip.res == (30.0, 30.0)
            assert chip.shape == (16, 16)
            assert chip.dtypes[0] == "uint16"
            assert tuple(chip.bounds) == pytest.approx(props["bounds"])
            pixels = chip.read()
        # independent check: the same ground read straight from one of the original tiles
        matches = []
        for name in ("LC08_fake_A.tif", "LC08_fake_B.tif"):
            with rasterio.open(fake_archive / "landsat" / name) as src:
                if shapely.box(*src.bounds).contains(box):
                    window = from_bounds(*props["bounds"], transform=src.transform).round_offsets()
                    matches.append(np.array_equal(src.read(window=window), pixels))
        assert any(matches)


@pytest.mark.slow
def test_sample_user_errors_are_one_line(
    fake_archive: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    out = tmp_path / "chips"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    cases = [
        (["--roi", ROI, "--out", str(out)], "already exists and is not empty"),
        (["--roi", "10,45,11,46", "--out", str(tmp_path / "a")], "intersects no source"),
        (["--roi", str(tmp_path / "no.geojson"), "--out", str(tmp_path / "b")], "does not exist"),
        (
            ["--roi", ROI, "--bands", "B9", "--out", str(tmp_path / "c")],
            "no source has the requested bands",
        ),
    ]
    for i, (extra, message) in enumerate(cases):  # one real process; the rest in this one
        run = run_cli if i == 0 else cli
        proc = run("archive", "sample", str(fake_archive), "--size", "16", "--count", "2", *extra)
        assert proc.returncode == 2
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert (out / "keep.txt").read_text() == "earlier work"
    assert not (tmp_path / "a").exists()
    assert not (tmp_path / "c").exists()


def test_inspect_with_nothing_usable_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    assert main(["archive", "inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no usable raster source" in err


def test_cli_help_lists_only_implemented_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    assert "archive" in proc.stdout
    assert "data" in proc.stdout
    assert "embed" in proc.stdout
