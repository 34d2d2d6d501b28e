"""The fine-tuning tasks: one record each, what the CLI and ``predict`` need to know of a task.

A record names the task class that owns everything else (its labels and scenes, classes, head,
loss, metrics and previews: :class:`~geopera.finetune.base.FinetuneTask`); the class is imported
only when it is needed, so that reading the registry (the CLI's choices and help) costs no torch
import. Adding a task is its class and its record here.
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geopera.finetune.base import FinetuneTask


@dataclass(frozen=True)
class TaskArgument:
    """A command-line argument of a task's ``finetune`` sub-command, kept in ``config.data``.

    Attributes:
        flag: The option (``--images``); its ``data`` key is the name without dashes.
        help: What it takes.
        many: Whether it takes several values (a list in the config).
        choices: The values it allows, or None.
    """

    flag: str
    help: str
    many: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def key(self) -> str:
        """Its key in ``config.data`` (``--box-coords`` -> ``box_coords``)."""
        return self.flag.lstrip("-").replace("-", "_")


_IMAGES = TaskArgument("--images", "image files, folders or quoted globs", many=True)


@dataclass(frozen=True)
class TaskInfo:
    """One fine-tuning task.

    Attributes:
        name: Its sub-command of ``geopera finetune`` and ``geopera predict``, and the spec's
            ``task``.
        summary: What it learns from what labels, for the CLI's help.
        headline: The test metric ``geopera finetune`` reports.
        task_class: ``module:Class`` of its :class:`~geopera.finetune.base.FinetuneTask`.
        arguments: Its ``finetune`` sub-command's own arguments (where the labels are).
        predictor: ``module:function`` of its ``predict`` writer: ``(task, PredictRequest) ->
            PredictSummary`` (:mod:`geopera.predict.request`).
        output: What ``predict`` writes, for the CLI's help.
        inputs: Rasters one prediction reads (change: the two dates).
    """

    name: str
    summary: str
    headline: str
    task_class: str
    arguments: tuple[TaskArgument, ...]
    predictor: str
    output: str
    inputs: int = 1

    def load(self) -> "type[FinetuneTask]":
        """The task class."""
        found: type[FinetuneTask] = _named(self.task_class)
        return found

    def predict(self) -> "Callable[[FinetuneTask, Any], Any]":
        """Its ``predict`` writer, ``(task, PredictRequest) -> PredictSummary``.

        Typed in :mod:`geopera.predict.request`: a stage imports no other stage's records.
        """
        found: Callable[[FinetuneTask, Any], Any] = _named(self.predictor)
        return found


def _named(where: str) -> Any:
    """What ``module:name`` names (imported on demand: the registry costs no torch import)."""
    module, name = where.split(":")
    return getattr(importlib.import_module(module), name)


#: Every task, by name.
TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        TaskInfo(
            "segmentation",
            "per-pixel classes from a label raster, polygons or label chips",
            "miou",
            "geopera.finetune.segmentation:SegmentationTask",
            (
                _IMAGES,
                TaskArgument(
                    "--labels", "label raster or vector file, or a folder/glob of label chips"
                ),
                TaskArgument("--class-field", "vector labels: integer class attribute"),
            ),
            "geopera.predict.run:predict_classes",
            "a class COG on the input's grid (--probabilities: a probability COG)",
        ),
        TaskInfo(
            "detection",
            "boxes from a CSV table, Pascal VOC file or polygons",
            "map_50",
            "geopera.finetune.detection:DetectionTask",
            (
                _IMAGES,
                TaskArgument(
                    "--boxes", "CSV (image_path,xmin,ymin,xmax,ymax,label), VOC .xml or vector"
                ),
                TaskArgument(
                    "--box-coords", "CSV coordinates (default pixel)", choices=("pixel", "map")
                ),
                TaskArgument("--class-field", "vector boxes: class-name attribute"),
            ),
            "geopera.predict.detection:predict_boxes",
            "boxes in map coordinates with label and score (.gpkg or .geojson)",
        ),
        TaskInfo(
            "change",
            "change mask from two dates",
            "f1",
            "geopera.finetune.segmentation:ChangeTask",
            (
                TaskArgument("--before", "first-date raster"),
                TaskArgument("--after", "second-date raster"),
                TaskArgument("--labels", "change raster (0 = no change) or polygons of change"),
            ),
            "geopera.predict.run:predict_classes",
            "a change COG (0/1) on the first date's grid (--probabilities: a probability COG)",
            inputs=2,
        ),
        TaskInfo(
            "classification",
            "one class per chip, from class folders, a label table, a label raster or polygons",
            "accuracy",
            "geopera.finetune.classification:ClassificationTask",
            (
                TaskArgument(
                    "--images",
                    "images, folders or quoted globs; or ROOT of ROOT/<class>/<image>",
                    many=True,
                ),
                TaskArgument(
                    "--labels",
                    ".csv table (file and label columns), label raster or polygons; "
                    "none for class folders",
                ),
                TaskArgument(
                    "--class-field", "table: the label column; polygons: integer class attribute"
                ),
            ),
            "geopera.predict.labels:predict_labels",
            "one label per chip as GeoParquet (.parquet): footprint, label, value, score",
        ),
        TaskInfo(
            "regression",
            "a continuous value per pixel (canopy height, biomass...) from a target raster",
            "rmse",
            "geopera.finetune.regression:RegressionTask",
            (
                _IMAGES,
                TaskArgument(
                    "--labels", "target raster (nodata masked), or a folder/glob of target chips"
                ),
            ),
            "geopera.predict.values:predict_values",
            "a float32 COG of values on the input's grid (NaN: no prediction)",
        ),
    )
}
