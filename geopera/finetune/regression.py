"""Pixel regression: a continuous target per pixel (canopy height, biomass, elevation...).

The target is a raster (``--labels``): one for every image (read on each image's grid, warped
when needed), or a folder/glob of target chips paired with the images by key as segmentation's
label chips. Its nodata and non-finite pixels are masked out of the loss and the metrics. The
model is the segmentation pyramid with one output channel, trained on standardised targets
(the training chips' mean and standard deviation, kept in the spec) with a masked mean squared
error; it reports RMSE, MAE and R² in the target's units.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from rasterio.windows import Window
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from geopera.core.contracts import FinetunedSpec, TaskSection
from geopera.data.labelled.chips import ChipDataset, ClassMap
from geopera.data.labelled.labels import IGNORE, Grid, LabelError, open_on_grid
from geopera.data.labelled.scenes import Chip, Scene, expand_paths
from geopera.finetune.base import FinetuneError, FinetuneTask
from geopera.finetune.config import FinetuneConfig
from geopera.models.adapters import PyramidSegmenter
from geopera.viz.overlays import plot_values


@dataclass(frozen=True)
class ValueHead(TaskSection):
    """The decoder of a regression model and the target's scale.

    Attributes:
        decoder: ``upernet`` or ``fpn``.
        decoder_channels: Decoder width.
        target: The target raster's file name (what the values are).
        mean: Mean of the training chips' targets.
        std: Their standard deviation (the model predicts ``(y - mean) / std``).
    """

    decoder: str
    decoder_channels: int
    target: str
    mean: float
    std: float


def target_pairs(config: FinetuneConfig) -> dict[str, str]:
    """Image path -> its target raster.

    Raises:
        FinetuneError: If images or target are missing, or target chips do not pair.
    """
    d = config.data
    if not d.images or not d.labels:
        raise FinetuneError("regression needs --images and --labels (the target raster)")
    images = expand_paths(d.images)
    text = str(d.labels)
    if not (any(c in text for c in "*?[") or Path(text).is_dir()):
        if not Path(text).is_file():
            raise FileNotFoundError(f"target raster {text} does not exist")
        return dict.fromkeys(images.values(), text)
    targets = expand_paths([text])
    missing = sorted(set(images) - set(targets))
    if missing:
        raise FinetuneError(
            f"target chips {text} do not pair with the images: no target for keys {missing[:5]}"
        )
    return {path: targets[key] for key, path in images.items()}


def read_target(path: str | os.PathLike[str], grid: Grid) -> Any:
    """(H, W) float32 target on ``grid``; NaN where it has no value."""
    with open_on_grid(path, grid) as ds:
        return target_values(ds, None)


def target_values(ds: Any, window: Window | None) -> Any:
    """(h, w) float32 values of an open target (a window, or all), NaN where it has no value."""
    values = ds.read(1, window=window, masked=True)
    filled: np.ndarray = values.astype(np.float32).filled(np.nan)
    filled[~np.isfinite(filled)] = np.nan
    return filled


class TargetChips(ChipDataset):
    """Chips with their target: ``{"image": (C, S, S) float32, "target": (S, S) float32}``.

    NaN marks pixels without a target (the target's nodata, or the image's).

    Args:
        targets: Image path -> target raster.
        *args: What :class:`ChipDataset` takes.
    """

    def __init__(self, targets: dict[str, str], *args: Any) -> None:
        super().__init__(*args)
        self.targets = targets

    def __getitem__(self, index: int) -> dict[str, Any]:
        chip = self.chips[index]
        scene = self.scenes[chip.scene]
        image, invalid = self.read(scene.image, scene.grid, chip)
        window = Window(chip.col, chip.row, chip.size, chip.size)
        target_ds = self.reader(self.targets[scene.image], scene.grid)  # opened once per worker
        target = target_values(target_ds, window)
        target[invalid] = np.nan
        return {"image": torch.from_numpy(image), "target": torch.from_numpy(target)}


class RegressionTask(FinetuneTask):
    """A value per pixel: masked MSE on standardised targets; RMSE, MAE and R² in its units.

    Batches: ``{"image": (B, C, S, S) raw, "target": (B, S, S) float32, NaN = no value}``.
    """

    Head = ValueHead

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """Each image, its labels marking where the target has a value (0) or not (IGNORE)."""
        scenes = []
        for image, target in target_pairs(config).items():
            grid = Grid.of(image)
            valid = np.isfinite(read_target(target, grid))
            scenes.append(Scene(image, grid, np.where(valid, 0, IGNORE).astype(np.int32)))
        if not any((s.labels == 0).any() for s in scenes if s.labels is not None):
            raise LabelError(f"{config.data.labels} has no value on the images: same area?")
        return scenes

    @classmethod
    def class_map(cls, scenes: list[Scene], chips: list[Chip], min_per_class: int) -> ClassMap:
        """No classes: the target is continuous."""
        return ClassMap([])

    @classmethod
    def dataset(
        cls, config: FinetuneConfig, scenes: list[Scene], chips: list[Chip], bands: list[int],
        classes: ClassMap,
    ) -> ChipDataset:  # fmt: skip
        """The chips with their targets."""
        return TargetChips(target_pairs(config), scenes, chips, bands, classes)

    @classmethod
    def head_section(
        cls, config: FinetuneConfig, train: ChipDataset, classes: ClassMap
    ) -> TaskSection:
        """The decoder, and the mean and spread of up to 64 training chips' targets."""
        picks = np.random.default_rng(config.data.seed).permutation(len(train))[:64]
        values = np.concatenate([train[int(i)]["target"].numpy().ravel() for i in picks])
        values = values[np.isfinite(values)]
        if not len(values):
            raise FinetuneError("the training chips hold no target value")
        m = config.model
        std = float(values.std()) or 1.0  # a constant target: unit scale
        name = Path(str(config.data.labels)).name
        return ValueHead(m.decoder, m.decoder_channels, name, float(values.mean()), std)

    @classmethod
    def check_settings(cls, config: FinetuneConfig) -> None:
        """The pyramid decoders only (DPT is a segmentation head of smp)."""
        if config.model.decoder == "dpt":
            raise FinetuneError("regression uses a pyramid decoder: model.decoder upernet or fpn")

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__(spec)
        self.scores = nn.ModuleDict(
            {
                split: MetricCollection(
                    {
                        "rmse": MeanSquaredError(squared=False),
                        "mae": MeanAbsoluteError(),
                        "r2": R2Score(),
                    }
                )
                for split in ("val", "test")
            }
        )

    @property
    def head(self) -> ValueHead:
        """The task's section of the spec."""
        return cast(ValueHead, self.spec.head)

    def value_name(self) -> str:
        """The target raster's name."""
        return self.head.target

    def build_model(self) -> nn.Module:
        """The segmentation pyramid with one output channel."""
        return PyramidSegmenter(self.new_vit(), 1, self.head.decoder, self.head.decoder_channels)

    def standard(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, S, S) standardised predictions of raw chips."""
        out: Tensor = self.model(self.normalise(batch["image"]))[:, 0]
        return out

    def predict_chips(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, 1, S, S) values in the target's units."""
        return (self.standard(batch) * self.head.std + self.head.mean)[:, None]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Mean squared error on the pixels with a target, in standard units."""
        image, target = self.augment(batch["image"], batch["target"])
        valid = torch.isfinite(target)
        error = self.standard({"image": image}) - (target - self.head.mean) / self.head.std
        loss = error[valid].pow(2).mean() if valid.any() else error.sum() * 0
        self.log("train/loss", loss, prog_bar=True, batch_size=target.shape[0])
        return loss

    def eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        """Accumulate the errors of the pixels with a target."""
        valid = torch.isfinite(batch["target"])
        if valid.any():
            values = self.predict_chips(batch)[:, 0]
            metric = cast(MetricCollection, self.scores[split])
            metric.update(values[valid], batch["target"][valid])

    def epoch_scores(self, split: str) -> dict[str, Any]:
        """RMSE, MAE (target units) and R² over every pixel with a target."""
        metric = cast(MetricCollection, self.scores[split])
        if not metric["rmse"].update_count:  # no pixel with a target in this split
            return {"rmse": None, "mae": None, "r2": None}
        found = {key: float(value) for key, value in metric.compute().items()}
        metric.reset()
        return found

    @torch.no_grad()
    def preview(self, sample: dict[str, Any], path: Path, rgb: list[int]) -> None:
        """The chip, its target and the prediction on one colour scale."""
        predicted = self.predict_chips(self.on_device(sample))[0, 0].cpu()
        plot_values(sample["image"][0], sample["target"][0], predicted, self.head.target, path, rgb)
