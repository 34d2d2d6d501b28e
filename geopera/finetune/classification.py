"""Chip classification: one class per chip, from class folders, a label table or label maps.

Where the labels come from (``--labels``):

* none: ``--images ROOT`` holds class folders (``ROOT/<class>/<image>``, the ImageFolder layout);
* a ``.csv`` table with a file column (``file``, ``path`` or ``tile``) and a label column
  (``label``, ``class``..., or the column ``--class-field`` names);
* a label raster or polygons (``--class-field``: their integer class): a chip's class is the
  majority of its labelled pixels.

Every image is cut into chips of ``data.chip_size`` (a tile of that size is one chip); a chip
takes its image's class, or the majority of its label pixels. Splits are spatial blocks as for
segmentation (:mod:`geopera.data.labelled.chips`).
"""

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from geopera.core.contracts import FinetunedSpec, TaskSection
from geopera.data.labelled.chips import ChipDataset, ClassMap
from geopera.data.labelled.labels import Grid
from geopera.data.labelled.scenes import Chip, Scene, expand_paths, segmentation_scenes
from geopera.data.labelled.sets import FILE_COLUMNS, IMAGE_SUFFIXES, LABEL_COLUMNS
from geopera.finetune.base import FinetuneError, FinetuneTask, confusion_scores
from geopera.finetune.config import FinetuneConfig
from geopera.viz.overlays import plot_segmentation


@dataclass(frozen=True)
class LabelHead(TaskSection):
    """The classes of a chip classifier.

    Attributes:
        class_names: One name per class, in output order (folder or table names; the class
            values of label rasters and polygons).
    """

    class_names: list[str]


class ChipClassifier(nn.Module):
    """A ViT and a linear layer on its pooled tokens (timm's ``global_pool``).

    Args:
        vit: The backbone (no classifier).
        num_classes: Output classes.
    """

    def __init__(self, vit: VisionTransformer, num_classes: int) -> None:
        super().__init__()
        self.vit = vit
        self.head = nn.Linear(vit.num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, S, S) normalised chips -> (B, K) logits."""
        pooled = self.vit.forward_head(self.vit.forward_features(x), pre_logits=True)  # (B, D)
        out: Tensor = self.head(pooled)
        return out


def named_labels(config: FinetuneConfig) -> dict[str, str] | None:
    """Image path -> class name for class folders and label tables; None for label maps.

    Raises:
        FinetuneError: If the folders or the table hold no labelled image.
    """
    d = config.data
    if d.labels is None:
        return _folder_labels(d.images)
    if Path(d.labels).suffix.lower() == ".csv":
        return _table_labels(Path(d.labels), d.images, d.class_field)
    return None


def _folder_labels(roots: list[str]) -> dict[str, str]:
    found = {
        str(image): folder.name
        for root in map(Path, roots)
        if root.is_dir()
        for folder in sorted(p for p in root.iterdir() if p.is_dir())
        for image in sorted(folder.iterdir())
        if image.suffix.lower() in IMAGE_SUFFIXES
    }
    if not found:
        raise FinetuneError(
            f"--images {' '.join(roots)} holds no class folders with images (ROOT/<class>/"
            "<image>); or give --labels: a .csv table, a label raster or polygons"
        )
    return found


def _table_labels(table: Path, images: list[str], class_field: str | None) -> dict[str, str]:
    if not table.is_file():
        raise FileNotFoundError(f"label table {table} does not exist")
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = list(rows[0]) if rows else []
    file_col = next((c for c in FILE_COLUMNS if c in columns), None)
    label_col = class_field or next((c for c in LABEL_COLUMNS if c in columns), None)
    if file_col is None or label_col not in columns:
        raise FinetuneError(
            f"{table} needs a file column ({'/'.join(FILE_COLUMNS)}) and a label column "
            f"({'/'.join(LABEL_COLUMNS)}, or name it with --class-field); it has {columns}"
        )
    by_name = {Path(r[file_col]).name: r[label_col] for r in rows}
    paths = expand_paths(images).values()
    found = {p: by_name[Path(p).name] for p in paths if Path(p).name in by_name}
    if not found:
        raise FinetuneError(
            f"no image of --images is named in {table}'s {file_col} column: give the images "
            "the table lists"
        )
    return found


class ClassificationTask(FinetuneTask):
    """One class per chip: cross-entropy on pooled tokens; accuracy, macro F1, per-class F1.

    Batches are those of segmentation (``"image"``, ``"mask"``); a chip's class is the majority
    of its labelled pixels (one value everywhere for folders and tables).
    """

    Head = LabelHead

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """Each image with its class everywhere, or its label raster or polygons."""
        d = config.data
        if not d.images:
            raise FinetuneError(
                "classification needs --images (class folders ROOT/<class>/<image>, or images "
                "with --labels: a .csv table, a label raster or polygons)"
            )
        named = named_labels(config)
        if named is None:
            return segmentation_scenes(d.images, cast(str, d.labels), d.class_field)
        names = sorted(set(named.values()))
        scenes = []
        for path, name in named.items():
            grid = Grid.of(path)
            code = np.full((grid.height, grid.width), names.index(name), dtype=np.int32)
            scenes.append(Scene(path, grid, code))
        return scenes

    @classmethod
    def class_map(cls, scenes: list[Scene], chips: list[Chip], min_per_class: int) -> ClassMap:
        """The classes of the chips; two at least."""
        classes = ClassMap.from_scenes(scenes)
        if len(classes.values) < 2:
            raise FinetuneError(
                f"the labels hold {len(classes.values)} class(es); classification needs two"
            )
        return classes

    @classmethod
    def head_section(
        cls, config: FinetuneConfig, train: ChipDataset, classes: ClassMap
    ) -> TaskSection:
        """The class names (folder or table names, else the label values)."""
        named = named_labels(config)
        if named is None:
            return LabelHead([str(v) for v in classes.values])
        names = sorted(set(named.values()))
        return LabelHead([names[int(v)] for v in classes.values])

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__(spec)
        k = len(spec.classes)
        self.confusion = nn.ModuleDict(
            {s: MulticlassConfusionMatrix(k, ignore_index=-1) for s in ("val", "test")}
        )

    def class_names(self) -> list[str]:
        """The folder or table names (else the label values)."""
        return cast(LabelHead, self.spec.head).class_names

    def build_model(self) -> nn.Module:
        """The ViT and a linear classifier."""
        return ChipClassifier(self.new_vit(), len(self.spec.classes))

    def chip_labels(self, mask: Tensor) -> Tensor:
        """(B, S, S) pixel classes (-1 unlabelled) -> (B,) majority class, -1 if none."""
        k = len(self.spec.classes)
        valid = (mask >= 0).flatten(1).float()  # (B, S*S)
        counts = torch.zeros(mask.shape[0], k, device=mask.device)  # (B, K)
        counts.scatter_add_(1, mask.clamp(min=0).flatten(1), valid)
        return torch.where(counts.sum(1) > 0, counts.argmax(1), -1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy of the augmented chips' classes."""
        image, mask = self.augment(batch["image"], batch["mask"])
        labels = self.chip_labels(mask)
        loss = F.cross_entropy(self.logits({"image": image}), labels, ignore_index=-1)
        self.log("train/loss", loss, prog_bar=True, batch_size=labels.shape[0])
        return loss

    def eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        """Accumulate the confusion matrix of the chips' classes."""
        labels = self.chip_labels(batch["mask"])
        logits = self.logits(batch)
        metric = cast(MulticlassConfusionMatrix, self.confusion[split])
        metric.update(logits.argmax(1), labels)

    def epoch_scores(self, split: str) -> dict[str, Any]:
        """Accuracy, macro F1, per-class F1 and IoU, the confusion matrix and the chip count."""
        metric = cast(MulticlassConfusionMatrix, self.confusion[split])
        matrix = metric.compute()
        metric.reset()
        scores = confusion_scores(matrix)
        scores["confusion"] = matrix.tolist()
        scores["chips"] = int(matrix.sum())
        return scores

    @torch.no_grad()
    def preview(self, sample: dict[str, Any], path: Path, rgb: list[int]) -> None:
        """The chip, its class and the predicted class (as class-coloured panels)."""
        mask = sample["mask"]
        truth = self.chip_labels(mask)[0]
        best = self.predict_chips(self.on_device(sample)).argmax(1)[0].cpu()
        truth_map = torch.full_like(mask[0], int(truth))  # (S, S): the chip's one class
        best_map = torch.full_like(mask[0], int(best))
        plot_segmentation(sample["image"][0], truth_map, best_map, self.class_names(), path, rgb)
