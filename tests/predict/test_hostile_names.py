"""Class names from a label file go through ``finetune`` and ``predict`` as data, not paths."""

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd

from tests.conftest import CliResult
from tests.fakes.hostile import files_under
from tests.finetune.conftest import TINY_VIT, local_config

HOSTILE_CLASSES = ("../../escaped", "/tmp/geopera_abs_escaped", "CON")


def test_hostile_class_names_stay_data(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    neon = shared_data / "d_detection" / "neon_trees_deepforest"
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(neon / "OSBS_029.tif", inputs / "OSBS_029.tif")
    with open(neon / "OSBS_029.csv") as src, open(inputs / "boxes.csv", "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        writer = csv.DictWriter(dst, fieldnames=list(rows[0]))
        writer.writeheader()
        for n, row in enumerate(rows):
            writer.writerow({**row, "label": HOSTILE_CLASSES[n % len(HOSTILE_CLASSES)]})
    config = local_config("neon_trees.yaml", shared_data, tmp_path)
    model = tmp_path / "model"
    result = cli("finetune", "detection", "--config", str(config), "--images",
                 str(inputs / "OSBS_029.tif"), "--boxes", str(inputs / "boxes.csv"),
                 "--max-steps", "1", "--out", str(model), *TINY_VIT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = tmp_path / "pred" / "boxes.gpkg"
    args = ["predict", "detection", "--model", str(model / "model.ckpt")]
    result = cli(*args, "--input", str(inputs / "OSBS_029.tif"), "--min-score", "0",
                 "--output", str(output))  # fmt: skip
    assert result.returncode == 0, result.stderr
    stac = {output.with_name("boxes.gpkg.item.json"), output.with_name("catalog.json")}
    written = files_under(model) | {output} | stac
    assert files_under(tmp_path) == written | files_under(inputs) | {config}
    assert not list(Path("/tmp").glob("geopera_abs_escaped*"))
    assert set(gpd.read_file(output)["label"]) <= set(HOSTILE_CLASSES)
