"""`geopera predict` through the CLI: georeferenced outputs on the real shared data."""

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features

from geopera.cli.main import main
from tests.conftest import CliResult, threads_of_one_rank, torchrun
from tests.finetune.conftest import TINY_VIT, geopera_exe, local_config, run_cli


@pytest.fixture(scope="module")
def models(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models from two optimiser steps of each task (in this process: no start-up)."""
    folder = tmp_path_factory.mktemp("models")
    out = {}
    for task, name in (("change", "oscd_bercy.yaml"), ("detection", "neon_trees.yaml")):
        config = local_config(name, shared_data, folder)
        argv = ["finetune", task, "--config", str(config), "--max-steps", "2"]
        assert main([*argv, "--out", str(folder / task), *TINY_VIT]) == 0
        out[task] = folder / task / "model.ckpt"
    return out


def _same_grid(a: Path, b: Path) -> None:
    with rasterio.open(a) as x, rasterio.open(b) as y:
        assert x.crs == y.crs
        assert x.transform.almost_equals(y.transform)
        assert (x.width, x.height) == (y.width, y.height)


@pytest.mark.slow
def test_change_map_is_a_cog_on_the_input_grid(
    models: dict[str, Path], shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    oscd = shared_data / "c_change_detection" / "oscd_bercy"
    out = tmp_path / "change.tif"
    args = ["predict", "change", "--model", str(models["change"])]
    args += ["--input", str(oscd / "T1_S2L1C_13bands_10m.tif")]
    args += ["--after", str(oscd / "T2_S2L1C_13bands_10m.tif"), "--output", str(out)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    _same_grid(out, oscd / "T1_S2L1C_13bands_10m.tif")
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert set(np.unique(ds.read(1))) <= {0, 1}
    again = cli(*args)
    assert again.returncode == 2
    assert "already exists" in again.stderr


@pytest.mark.slow
def test_change_prediction_respects_the_roi(
    models: dict[str, Path], shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    oscd = shared_data / "c_change_detection" / "oscd_bercy"
    out = tmp_path / "roi.tif"
    result = cli(
        "predict",
        "change",
        "--model",
        str(models["change"]),
        "--input",
        str(oscd / "T1_S2L1C_13bands_10m.tif"),
        "--after",
        str(oscd / "T2_S2L1C_13bands_10m.tif"),
        "--roi",
        "2.375,48.83,2.385,48.835",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with rasterio.open(out) as ds:
        data = ds.read(1)
        rows, cols = np.nonzero(data != 255)
        xs, ys = rasterio.transform.xy(ds.transform, rows, cols)
    assert len(rows) > 0
    assert (data == 255).any()
    assert min(xs) >= 2.3749
    assert max(xs) <= 2.3851
    assert min(ys) >= 48.8299
    assert max(ys) <= 48.8351


@pytest.mark.slow
def test_detection_writes_boxes_in_map_coordinates(
    models: dict[str, Path], shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    image = shared_data / "d_detection" / "neon_trees_deepforest" / "OSBS_029.tif"
    out = tmp_path / "trees.gpkg"
    result = cli(
        "predict",
        "detection",
        "--model",
        str(models["detection"]),
        "--input",
        str(image),
        "--min-score",
        "0.0",
        "--output",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    boxes = gpd.read_file(out)
    with rasterio.open(image) as ds:
        assert boxes.crs == ds.crs
        left, bottom, right, top = ds.bounds
    assert len(boxes) > 0
    assert set(boxes.columns) >= {"label", "score", "geometry"}
    x0, y0, x1, y1 = boxes.total_bounds
    assert left - 0.01 <= x0
    assert x1 <= right + 0.01
    assert bottom - 0.01 <= y0
    assert y1 <= top + 0.01
    assert set(boxes["label"]) == {"Tree"}
    # the same with an ROI over the tile's western half: every kept box is centred inside it
    roi = f"EPSG:{boxes.crs.to_epsg()};POLYGON(({left} {bottom}, {(left + right) / 2} {bottom}, {(left + right) / 2} {top}, {left} {top}, {left} {bottom}))"  # noqa: E501
    half = tmp_path / "west.geojson"
    result = cli(
        "predict",
        "detection",
        "--model",
        str(models["detection"]),
        "--input",
        str(image),
        "--min-score",
        "0.0",
        "--roi",
        roi,
        "--output",
        str(half),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    west = gpd.read_file(half)
    assert 0 < len(west) < len(boxes)
    assert (west.geometry.centroid.x <= (left + right) / 2 + 1e-6).all()


@pytest.mark.slow
def test_wrong_task_is_a_clear_error(
    models: dict[str, Path], shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    image = shared_data / "d_detection" / "neon_trees_deepforest" / "OSBS_029.tif"
    result = cli(
        "predict",
        "segmentation",
        "--model",
        str(models["detection"]),
        "--input",
        str(image),
        "--output",
        str(tmp_path / "x.tif"),
    )
    assert result.returncode == 2
    assert "is a detection model" in result.stderr


@pytest.mark.slow
def test_short_training_finds_atlanta_buildings(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """150 steps from scratch, then the whole tile: buildings come out where the polygons are."""
    folder = shared_data / "b_segmentation" / "spacenet4_atlanta_buildings"
    config = local_config("atlanta_buildings.yaml", shared_data, tmp_path)
    result = cli(
        "finetune",
        "segmentation",
        "--config",
        str(config),
        "--max-steps",
        "150",
        "--set",
        "data.chip_size=64",
        "--set",
        "trainer.val_every=1000",
        "--out",
        str(tmp_path / "m"),
        *TINY_VIT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "buildings.tif"
    result = cli(
        "predict",
        "segmentation",
        "--model",
        str(tmp_path / "m" / "model.ckpt"),
        "--input",
        str(folder / "sample_geotiff.tif"),
        "--output",
        str(out),
        "--probabilities",
        str(tmp_path / "probs.tif"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _same_grid(out, folder / "sample_geotiff.tif")
    _same_grid(tmp_path / "probs.tif", folder / "sample_geotiff.tif")
    with rasterio.open(out) as ds:
        predicted = ds.read(1) == 1
        polygons = gpd.read_file(folder / "geotiff_labels.geojson").to_crs(ds.crs)
        inside = rasterio.features.geometry_mask(
            polygons.geometry, predicted.shape, ds.transform, invert=True
        )
        largest = polygons.loc[polygons.area.sort_values(ascending=False).index[:5]].geometry
        covered = [
            predicted[
                rasterio.features.geometry_mask([g], predicted.shape, ds.transform, invert=True)
            ].mean()
            for g in largest
        ]
    assert predicted[inside].mean() >= 3 * predicted[~inside].mean()
    assert max(covered) >= 0.25, covered
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["steps"] == 150


@pytest.mark.slow  # two ranks and a one-process reference: 27 s alone, 39 s beside another worker
def test_two_processes_predict_what_one_predicts(
    models: dict[str, Path], shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    """Column bands shared by two processes (gloo on this CPU); rank 0 writes the COGs."""
    oscd = shared_data / "c_change_detection" / "oscd_bercy"
    args = ["predict", "change", "--model", str(models["change"])]
    args += ["--input", str(oscd / "T1_S2L1C_13bands_10m.tif")]
    args += ["--after", str(oscd / "T2_S2L1C_13bands_10m.tif")]
    args += ["--band-width", "128", "--device", "cpu"]  # 3 column bands of the 360 px scene
    outs = {}
    for n in (1, 2):
        outs[n] = tmp_path / f"change{n}.tif", tmp_path / f"probs{n}.tif"
        with threads_of_one_rank():  # the threads each of the two ranks has
            proc = cli(*args, "--output", str(outs[n][0]), "--probabilities", str(outs[n][1]),
                       "--devices", str(n))  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    for one, two in zip(outs[1], outs[2], strict=True):
        with rasterio.open(one) as a, rasterio.open(two) as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert a.transform == b.transform
            assert b.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    outputs = [p.name for pair in outs.values() for p in pair]
    items = [f"{name}.item.json" for name in outputs]  # a STAC item each, and their catalog
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [*outputs, *items, "catalog.json"]
    )  # no scratch or parts left
    many = cli(*args, "--output", str(tmp_path / "four.tif"), "--devices", "4")
    assert many.returncode == 2
    assert "4 processes for 3 column band(s) of 128 px" in many.stderr


@pytest.mark.slow
def test_under_torchrun_rank_zero_writes_what_one_process_writes(
    models: dict[str, Path], shared_data: Path, tmp_path: Path
) -> None:
    oscd = shared_data / "c_change_detection" / "oscd_bercy"
    args = ["predict", "change", "--model", str(models["change"]), "--band-width", "128"]
    args += ["--input", str(oscd / "T1_S2L1C_13bands_10m.tif"), "--device", "cpu"]
    args += ["--after", str(oscd / "T2_S2L1C_13bands_10m.tif")]
    # the reference runs in a fresh process too, on the one thread torchrun gives each rank
    one = subprocess.run(
        [geopera_exe(), *args, "--output", str(tmp_path / "one.tif")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert one.returncode == 0, one.stderr
    proc = torchrun("-m", "geopera", *args, "--output", str(tmp_path / "two.tif"), "--devices", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote ") == 1  # rank 0 reports
    with rasterio.open(tmp_path / "one.tif") as a, rasterio.open(tmp_path / "two.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "catalog.json", "one.tif", "one.tif.item.json", "two.tif", "two.tif.item.json",
    ]  # fmt: skip
