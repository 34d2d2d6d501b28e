"""`geopera predict regression`: a float32 COG of values on the input's grid."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopera.cli.main import main
from tests.conftest import CliResult
from tests.finetune.conftest import TINY_VIT

FOLDER = ("a_pretrain", "sentinel2_eolearn_slovenia")


@pytest.fixture(scope="module")
def model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Elevation from the Slovenia scenes (16 px chips, 3 steps)."""
    out = tmp_path_factory.mktemp("regressor") / "model"
    images = shared_data.joinpath(*FOLDER, "S2L1C_reference_scene*.tif")
    code = main(["finetune", "regression", "--images", str(images), "--labels",
                 str(shared_data.joinpath(*FOLDER, "DEM.tif")), "--set", "data.chip_size=16",
                 "--max-steps", "3", "--out", str(out), *TINY_VIT])  # fmt: skip
    assert code == 0
    return out


def test_values_are_a_float_cog_on_the_input_grid(
    model: Path, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scene = shared_data.joinpath(*FOLDER, "S2L1C_reference_scene0.tif")
    with rasterio.open(scene) as src:
        b, epsg = src.bounds, src.crs.to_epsg()
        grid = (src.crs, src.transform, src.shape)
    mid = (b.left + b.right) / 2
    roi = f"EPSG:{epsg};POLYGON(({b.left} {b.bottom}, {mid} {b.bottom}, {mid} {b.top}, {b.left} {b.top}, {b.left} {b.bottom}))"  # noqa: E501
    out = tmp_path / "dem.tif"
    result = cli("predict", "regression", "--model", str(model), "--input", str(scene),
                 "--roi", roi, "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    with rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == grid
        assert dst.dtypes[0] == "float32"
        assert np.isnan(dst.nodata)
        assert dst.tags()["task"] == "regression"
        values = dst.read(1)
    west, east = values[:, :45], values[:, 55:]
    assert np.isfinite(west).all()  # inside the ROI
    assert np.isnan(east).all()  # outside it: nodata
    with rasterio.open(shared_data.joinpath(*FOLDER, "DEM.tif")) as dem:
        low, high = float(dem.read(1).min()), float(dem.read(1).max())
    spread = high - low
    assert low - spread < float(np.nanmean(values)) < high + spread  # metres, de-standardised


def test_regression_runs_on_one_device(
    model: Path, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scene = shared_data.joinpath(*FOLDER, "S2L1C_reference_scene0.tif")
    result = cli("predict", "regression", "--model", str(model), "--input", str(scene),
                 "--output", str(tmp_path / "x.tif"), "--devices", "2")  # fmt: skip
    assert result.returncode != 0
    assert "regression runs on one device" in result.stderr
    assert not (tmp_path / "x.tif").exists()
