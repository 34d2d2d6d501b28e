import csv
import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely
import torch
from PIL import Image

from geopera.core.errors import GeoperaError
from geopera.core.yaml_config import set_key, to_plain
from geopera.pretrain.config import PretrainConfig
from geopera.pretrain.probe import ProbeSet, knn_accuracy, load_probe
from geopera.pretrain.task import PerATask
from tests.pretrain.conftest import run_cli


def _tiny_task() -> PerATask:
    config = PretrainConfig()
    set_key(config, "model", "backbone_kwargs", {"embed_dim": 32, "depth": 2, "num_heads": 2})
    set_key(config, "model", "prototypes", 16)
    set_key(config, "views", "global_size", 32)
    return PerATask(to_plain(config), 3, None, [[0.0] * 3], [[1.0] * 3], [0.5] * 3, [0.25] * 3)


def test_knn_is_perfect_on_near_duplicates_and_leaves_one_out() -> None:
    torch.manual_seed(0)
    base = torch.rand(3, 3, 32, 32)  # three distinct images -> three classes
    images = base.repeat_interleave(3, dim=0) + 0.001 * torch.rand(9, 3, 32, 32)
    labels = torch.arange(3).repeat_interleave(3)
    probe = ProbeSet(images, torch.zeros(9, dtype=torch.long), labels, ["a", "b", "c"])
    task = _tiny_task()
    assert knn_accuracy(task, probe, k=2) == 1.0
    # with one sample per class, leave-one-out can never find the right class
    single = ProbeSet(base, torch.zeros(3, dtype=torch.long), torch.arange(3), ["a", "b", "c"])
    assert knn_accuracy(task, single, k=1) == 0.0


def test_probe_validation(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"labelled vector file or chip folder"):
        load_probe(tmp_path / "nope.gpkg", [], 3, 16)
    (tmp_path / "chips").mkdir()
    with pytest.raises(GeoperaError, match=r"no labels\.csv"):
        load_probe(tmp_path / "chips", [], 3, 16)
    path = tmp_path / "points.geojson"
    gpd.GeoDataFrame({"foo": [1]}, geometry=[shapely.Point(0, 0)], crs=4326).to_file(path)
    with pytest.raises(GeoperaError, match="no label column"):
        load_probe(path, [], 3, 16)


@pytest.mark.slow
def test_pretrain_with_vector_probe(tiny_args: list[str], tmp_path: Path) -> None:
    # six labelled points whose 48-px patches lie inside the fake Landsat tiles (EPSG:32621)
    xs = [701000, 701500, 702000, 703000, 703500, 704000]
    points = gpd.GeoDataFrame(
        {"label": ["a", "a", "a", "b", "b", "b"]},
        geometry=[shapely.Point(x, -2792500 if x < 703000 else -2793000) for x in xs],
        crs=32621,
    )
    probe = tmp_path / "probe.gpkg"
    points.to_file(probe)
    run = tmp_path / "run"
    extra = ["--set", "trainer.probe_every=2"]
    proc = run_cli(*tiny_args, "--max-steps", "3", "--probe", str(probe), "--out", str(run), *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(run / "metrics.csv", newline="") as fh:
        rows = {int(r["step"]): r["probe_knn"] for r in csv.DictReader(fh)}
    assert rows[0] != ""
    assert rows[2] != ""
    assert rows[1] == ""
    assert 0.0 <= float(rows[2]) <= 1.0
    status = json.loads((run / "run.json").read_text())
    assert status["probe"]["samples"] == 6
    assert status["probe"]["classes"] == ["a", "b"]
    assert [s for s, _ in status["probe"]["knn_accuracy"]] == [0, 2]
    with Image.open(run / "previews" / "probe_knn.png") as image:
        assert image.format == "PNG"


def test_chip_folder_probe_on_shared_tiles(shared_data: Path) -> None:
    folder = shared_data / "e_scene_classification" / "chesapeake_tiles_derived"
    probe = load_probe(folder, [], 3, 64)
    assert probe.images.shape[1:] == (3, 64, 64)
    assert len(probe.labels) == 53
    assert probe.p2 is not None
    assert probe.p98 is not None
    assert len(probe.classes) >= 2
    accuracy = knn_accuracy(_tiny_task(), probe)
    assert 0.0 <= accuracy <= 1.0
