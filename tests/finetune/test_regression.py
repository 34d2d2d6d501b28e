"""`geopera finetune regression`: a continuous target per pixel, its nodata masked."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import rasterio
import torch
from torchmetrics import MetricCollection

from geopera.core.contracts import FinetunedSpec
from geopera.core.normalisation import BandStats
from geopera.finetune.checkpoint import load_finetuned
from geopera.finetune.regression import RegressionTask, TargetChips, ValueHead
from tests.conftest import CliResult
from tests.finetune.conftest import TINY_VIT

SLOVENIA = ("a_pretrain", "sentinel2_eolearn_slovenia")


def holed_dem(shared_data: Path, folder: Path) -> Path:
    """The Slovenia DEM with its left 40 columns set to nodata (-9999)."""
    with rasterio.open(shared_data.joinpath(*SLOVENIA, "DEM.tif")) as src:
        profile, values = src.profile, src.read(1)
    values[:, :40] = -9999
    out = folder / "dem_holed.tif"
    with rasterio.open(out, "w", **{**profile, "nodata": -9999}) as dst:
        dst.write(values, 1)
    return out


def test_regression_trains_on_the_dem_and_masks_its_nodata(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    images = shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene*.tif")
    target = holed_dem(shared_data, tmp_path)
    out = tmp_path / "model"
    result = cli("finetune", "regression", "--images", str(images), "--labels", str(target),
                 "--set", "data.chip_size=16", "--set", "data.block_chips=1",
                 "--max-steps", "3", "--out", str(out), *TINY_VIT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test rmse" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("val", "test"):
        assert set(metrics[split]) == {"rmse", "mae", "r2"}
        assert 0 < metrics[split]["mae"] <= metrics[split]["rmse"] < 200  # metres, not -9999s
    # chips of the nodata columns are not chips at all: 16 px chips of 60 valid columns x 6 rows
    assert sum(metrics["chips"].values()) < 5 * 6 * 6
    model = load_finetuned(out)
    assert isinstance(model, RegressionTask)
    assert isinstance(model.spec.head, ValueHead)
    with rasterio.open(shared_data.joinpath(*SLOVENIA, "DEM.tif")) as src:
        dem = src.read(1)
    assert dem[:, 40:].min() <= model.spec.head.mean <= dem[:, 40:].max()
    assert model.spec.classes == []
    assert (out / "previews" / "val_00.png").is_file()


def test_nodata_targets_are_nan_and_out_of_the_loss(shared_data: Path, tmp_path: Path) -> None:
    from geopera.data.labelled.labels import Grid
    from geopera.data.labelled.scenes import Chip, Scene

    image = str(shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene0.tif"))
    target = holed_dem(shared_data, tmp_path)
    chips = TargetChips({image: str(target)}, [Scene(image, Grid.of(image))],
                        [Chip(0, 0, 32, 16, "train")], list(range(13)), None)  # fmt: skip
    sample = chips[0]
    assert torch.isnan(sample["target"][:, :8]).all()  # columns 32-39 are nodata
    assert torch.isfinite(sample["target"][:, 8:]).all()


@pytest.mark.parametrize("bad", ["missing.tif", None])
def test_regression_without_a_target_is_one_line(
    bad: str | None, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    image = shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene0.tif")
    labels = ["--labels", str(tmp_path / bad)] if bad else []
    result = cli("finetune", "regression", "--images", str(image), *labels,
                 "--out", str(tmp_path / "m"))  # fmt: skip
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert ("does not exist" if bad else "needs --images and --labels") in result.stderr


def test_scores_are_those_of_numpy() -> None:
    """RMSE, MAE and R² of the accumulated pixels, against the formulas."""
    spec = FinetunedSpec(
        task="regression", model="vit_small_patch16_224", in_chans=1, bands=["1"],
        data_bands=[0], chip_size=16, classes=[],
        norm=BandStats.from_dict({"p2": [0.0], "p98": [1.0], "mean": [0.5], "std": [0.25]}),
        head=ValueHead("fpn", 32, "y.tif", 2.5, 1.0),
        model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    )  # fmt: skip
    task = RegressionTask(spec)
    assert task.epoch_scores("val") == {"rmse": None, "mae": None, "r2": None}  # nothing seen
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.0, 4.5])
    metric = cast(MetricCollection, task.scores["val"])
    metric.update(torch.tensor(p), torch.tensor(y))
    found = task.epoch_scores("val")
    assert found["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert found["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert found["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))
