"""`geopera finetune classification`: chip labels from class folders, a table or a label raster."""

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from geopera.core.contracts import FinetunedSpec
from geopera.core.normalisation import BandStats
from geopera.finetune.checkpoint import load_finetuned
from geopera.finetune.classification import ClassificationTask, LabelHead
from tests.conftest import CliResult
from tests.finetune.conftest import TINY_VIT

CHESAPEAKE = ("e_scene_classification", "chesapeake_tiles_derived")
SLOVENIA = ("a_pretrain", "sentinel2_eolearn_slovenia")


def test_a_chip_takes_the_majority_of_its_labelled_pixels() -> None:
    spec = FinetunedSpec(
        task="classification", model="vit_small_patch16_224", in_chans=1, bands=["1"],
        data_bands=[0], chip_size=16, classes=[0, 1, 2],
        norm=BandStats.from_dict({"p2": [0.0], "p98": [1.0], "mean": [0.5], "std": [0.25]}),
        head=LabelHead(["a", "b", "c"]), model_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    )  # fmt: skip
    task = ClassificationTask(spec)
    mask = torch.full((3, 4, 4), -1)
    mask[0, :3] = 2  # 12 pixels of class 2, 4 unlabelled
    mask[1, 0] = 0
    mask[1, 1:] = 1  # class 1 wins over class 0 (12 to 4)
    # chip 2: nothing labelled
    assert task.chip_labels(mask).tolist() == [2, 1, -1]
    assert task.class_names() == ["a", "b", "c"]


def _class_folders(shared_data: Path, root: Path) -> dict[str, int]:
    """``root/<label>/<tile>`` links from the Chesapeake table; tiles per class."""
    folder = shared_data.joinpath(*CHESAPEAKE)
    counts: dict[str, int] = {}
    with open(folder / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            (root / row["label"]).mkdir(parents=True, exist_ok=True)
            (root / row["label"] / row["tile"]).symlink_to(folder / "tiles" / row["tile"])
            counts[row["label"]] = counts.get(row["label"], 0) + 1
    return counts


def test_class_folders_train_a_classifier(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    counts = _class_folders(shared_data, tmp_path / "classes")
    out = tmp_path / "model"
    result = cli("finetune", "classification", "--images", str(tmp_path / "classes"),
                 "--max-steps", "2", "--out", str(out), *TINY_VIT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test accuracy" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "classification"
    assert sum(metrics["chips"].values()) == sum(counts.values())  # one 64 px chip per tile
    for split in ("val", "test"):
        assert 0 <= metrics[split]["accuracy"] <= 1
        assert metrics[split]["chips"] == metrics["chips"][split]
    model = load_finetuned(out)
    assert isinstance(model.spec.head, LabelHead)
    assert model.class_names() == sorted(counts)
    assert len(list((out / "previews").glob("val_*.png"))) == 4


def test_a_label_raster_gives_each_chip_its_majority_class(
    shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    images = shared_data.joinpath(*SLOVENIA, "S2L1C_reference_scene*.tif")
    labels = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif"
    out = tmp_path / "model"
    result = cli("finetune", "classification", "--images", str(images), "--labels", str(labels),
                 "--set", "data.chip_size=32", "--set", "data.block_chips=1",
                 "--set", "data.ignore_value=0", "--fast-dev-run", "--out", str(out),
                 *TINY_VIT)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    model = load_finetuned(out)
    assert set(model.spec.classes) <= {1, 2, 3, 4, 8}  # LULC codes, 0 (no data) ignored
    assert model.class_names() == [str(v) for v in model.spec.classes]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("name,kind\na.tif,x\n", "needs a file column"),
        ("tile,label\nnot_a_tile.tif,x\n", "no image of --images is named in"),
    ],
)
def test_a_table_that_does_not_fit_is_one_line(
    table: str, message: str, shared_data: Path, tmp_path: Path, cli: Callable[..., CliResult]
) -> None:
    (tmp_path / "labels.csv").write_text(table)
    tiles = shared_data.joinpath(*CHESAPEAKE, "tiles")
    result = cli("finetune", "classification", "--images", str(tiles), "--labels",
                 str(tmp_path / "labels.csv"), "--out", str(tmp_path / "m"))  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
