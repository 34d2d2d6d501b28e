"""`geopera predict classification`: one label per chip, written as GeoParquet."""

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio

from geopera.cli.main import main
from tests.conftest import CliResult
from tests.finetune.conftest import TINY_VIT

SCENE = ("a_pretrain", "sentinel2_eolearn_slovenia", "S2L1C_reference_scene0.tif")


@pytest.fixture(scope="module")
def model(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chip classifier of the Slovenia LULC (32 px chips, 2 steps)."""
    out = tmp_path_factory.mktemp("classifier") / "model"
    images = (
        shared_data / "a_pretrain" / "sentinel2_eolearn_slovenia" / "S2L1C_reference_scene*.tif"
    )
    labels = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif"
    code = main(["finetune", "classification", "--images", str(images), "--labels", str(labels),
                 "--set", "data.chip_size=32", "--set", "data.block_chips=1",
                 "--set", "data.ignore_value=0", "--max-steps", "2", "--out", str(out),
                 *TINY_VIT])  # fmt: skip
    assert code == 0
    return out


def test_each_chip_gets_a_label_and_its_footprint(
    model: Path, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scene = shared_data.joinpath(*SCENE)
    out = tmp_path / "labels.parquet"
    result = cli("predict", "classification", "--model", str(model), "--input", str(scene),
                 "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    chips = gpd.read_parquet(out)
    assert f"wrote {len(chips)} chips to {out}" in result.stdout
    with rasterio.open(scene) as src:
        crs, bounds, (h, w) = src.crs, src.bounds, src.shape
    assert chips.crs == crs
    # 100 x 101 px in 32 px chips from the corner: 4 x 4 chips, the last ones >= half inside
    assert sorted(set(chips["row"])) == [0, 32, 64] + ([96] if h - 96 >= 16 else [])
    assert sorted(set(chips["col"])) == [0, 32, 64] + ([96] if w - 96 >= 16 else [])
    first = chips[(chips["row"] == 0) & (chips["col"] == 0)].geometry.iloc[0]
    assert first.bounds[0] == pytest.approx(bounds.left)
    assert first.bounds[3] == pytest.approx(bounds.top)
    assert first.area == pytest.approx((32 * 10) ** 2, rel=0.01)  # 10 m pixels
    names = set(chips["label"])
    assert names <= {"1", "2", "3", "4", "8"}
    assert ((chips["score"] > 0) & (chips["score"] <= 1)).all()
    assert (chips["label"] == chips["value"].astype(str)).all()


def test_the_roi_keeps_the_chips_centred_inside_it(
    model: Path, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scene = shared_data.joinpath(*SCENE)
    with rasterio.open(scene) as src:
        b, epsg = src.bounds, src.crs.to_epsg()
    mid = b.left + 48 * 10  # a vertical line between the chips of columns 32 and 64
    roi = f"EPSG:{epsg};POLYGON(({b.left} {b.bottom}, {mid} {b.bottom}, {mid} {b.top}, {b.left} {b.top}, {b.left} {b.bottom}))"  # noqa: E501
    out = tmp_path / "west.parquet"
    result = cli("predict", "classification", "--model", str(model), "--input", str(scene),
                 "--roi", roi, "--output", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(gpd.read_parquet(out)["col"]) == {0, 32}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--output", "x.tif"], "must end in .parquet"),
        (["--output", "x.parquet", "--probabilities", "p.tif"], "writes no --probabilities"),
    ],
)
def test_outputs_it_cannot_write_are_one_line(
    args: list[str],
    message: str,
    model: Path,
    shared_data: Path,
    tmp_path: Path,
    cli: Callable[..., CliResult],
) -> None:
    scene = shared_data.joinpath(*SCENE)
    args = [str(tmp_path / a) if a.endswith((".tif", ".parquet")) else a for a in args]
    result = cli("predict", "classification", "--model", str(model), "--input", str(scene), *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_a_classifier_refuses_another_task_command(
    model: Path, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    scene = str(shared_data.joinpath(*SCENE))
    result = cli("predict", "segmentation", "--model", str(model), "--input", scene,
                 "--output", str(tmp_path / "x.tif"))  # fmt: skip
    assert result.returncode != 0
    assert "is a classification model; run `geopera predict classification`" in result.stderr
