"""Remote archives through the CLI, as a user runs it.

A static STAC catalog served over HTTP on 127.0.0.1 (real rasters from ../shared/data as COGs):
``archive inspect``, ``archive sample``, ``data fetch``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import from_bounds

from geopera.data.roi import load_roi
from tests.fakes.http import FakeStorage
from tests.fakes.stac import LANDSAT, ROI, original_landsat

QUICK_RETRIES = {"GDAL_HTTP_MAX_RETRY": "2", "GDAL_HTTP_RETRY_DELAY": "0.1"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("geopera")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_inspect_static_catalog_over_http(served: FakeStorage) -> None:
    proc = run_cli("archive", "inspect", f"{served.url}/catalog.json", "--roi", ROI, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    (source,) = report["sources"]  # the Sentinel-2 item lies outside the ROI
    assert source["name"] == "landsat8_30m"
    assert source["bands"] == ["B2", "B3", "B4"]
    assert source["crs"] == "EPSG:32621"
    assert source["roi_overlap"]["fraction_of_roi"] == pytest.approx(1.0)
    assert len(source["files"]) == 6
    assert all(f.startswith(f"/vsicurl/{served.url}/landsat/") for f in source["files"])
    assert report["problems"] == []
    assert served.count(".tif") == 0  # listing read only the JSON documents


def test_sample_static_catalog_over_http(
    served: FakeStorage, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "chips"
    proc = run_cli(
        "archive",
        "sample",
        f"{served.url}/catalog.json",
        "--roi",
        ROI,
        "--size",
        "32",
        "--count",
        "6",
        "--bands",
        "rgb",
        "--out",
        str(out),
        "--cache",
        str(tmp_path / "tiles"),
    )
    assert proc.returncode == 0, proc.stderr
    index = json.loads((out / "chips.geojson").read_text())
    assert len(index["features"]) == 6
    roi = load_roi(ROI).to_crs("EPSG:32621")
    assert list((tmp_path / "tiles").glob("*.npy"))  # fetched tiles were kept
    for feature in index["features"]:
        props = feature["properties"]
        assert shapely.contains(roi, shapely.box(*props["bounds"]))
        with rasterio.open(out / props["path"]) as chip:
            pixels = chip.read()
        # the same place read from the original local file (one of the two overlapping scenes)
        matches = []
        for scene in LANDSAT:
            with rasterio.open(original_landsat(shared_data, scene)) as src:
                window = from_bounds(*props["bounds"], transform=src.transform)
                expected = src.read([3, 2, 1], window=window.round_offsets().round_lengths())
            matches.append(np.array_equal(pixels, expected))
        assert any(matches)


def test_sample_survives_an_asset_that_keeps_failing(stac_catalog: Path, tmp_path: Path) -> None:
    root = tmp_path / "cat"
    shutil.copytree(stac_catalog, root)
    with FakeStorage(root) as storage:
        # LANDSAT[1] sorts first in its source (items by id), so patches in the overlap of
        # the two scenes try it first, meet the failing band and fall back to the other scene
        storage.inject(f"/landsat/{LANDSAT[1]}/B3.tif", *["503"] * 1000)
        out = tmp_path / "chips"
        proc = run_cli(
            "archive",
            "sample",
            f"{storage.url}/catalog.json",
            "--roi",
            ROI,
            "--size",
            "32",
            "--count",
            "4",
            "--out",
            str(out),
            env=QUICK_RETRIES,
        )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads((out / "chips.geojson").read_text())["features"]) == 4
    assert "1 item(s) became unreadable" in proc.stderr
    assert f"{LANDSAT[1]}/B3.tif" in proc.stderr


def test_bad_remote_inputs_are_one_line_errors(served: FakeStorage, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"type": "Topology"}')
    shutil.copy(tmp_path / "x.json", served.root / "x.json")
    cases = {
        f"{served.url}/x.json": "is not a STAC catalog, collection, item or ItemCollection",
        "http://127.0.0.1:9/catalog.json": "could not read the STAC document at http://127.0.0.1:9",
        f"stac+{served.url}?collections=none": "STAC search failed at",
    }
    for archive, message in cases.items():
        proc = run_cli("archive", "inspect", archive, "--roi", ROI)
        assert proc.returncode == 2, proc.stdout
        assert message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "Traceback" not in proc.stderr


def test_fetch_makes_an_offline_copy(
    served: FakeStorage, shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "offline"
    proc = run_cli("data", "fetch", f"{served.url}/catalog.json", "--roi", ROI, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "fetch.json").read_text())
    assert sorted(i["scene"] for i in manifest["items"]) == sorted(LANDSAT)
    roi = load_roi(ROI).to_crs("EPSG:32621")
    for item in manifest["items"]:
        with rasterio.open(out / item["file"]) as cog:
            assert cog.descriptions == ("B2", "B3", "B4")
            assert cog.profile["tiled"]
            assert shapely.box(*cog.bounds).contains(roi)  # covers the ROI, clipped to it
            assert max(cog.width, cog.height) < 512
            with rasterio.open(original_landsat(shared_data, item["scene"])) as src:
                window = from_bounds(*cog.bounds, transform=src.transform)
                expected = src.read(window=window.round_offsets().round_lengths())
            np.testing.assert_array_equal(cog.read(), expected)
    served.server.shutdown()  # offline from here on
    proc = run_cli("archive", "inspect", str(out / "catalog.json"), "--roi", ROI, "--json")
    assert proc.returncode == 0, proc.stderr
    (source,) = json.loads(proc.stdout)["sources"]
    assert (source["name"], source["bands"]) == ("landsat8_30m", ["B2", "B3", "B4"])
    again = run_cli("data", "fetch", str(out / "catalog.json"), "--roi", ROI, "--out", str(out))
    assert again.returncode == 2
    assert "not empty" in again.stderr or "exists" in again.stderr
