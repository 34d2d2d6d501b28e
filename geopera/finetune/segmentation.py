"""Semantic segmentation and change detection tasks (dense, per-pixel classes)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from geopera.core.contracts import FinetunedSpec, TaskSection
from geopera.core.errors import note
from geopera.data.labelled.chips import ChipDataset, ClassMap, drop_rare_classes
from geopera.data.labelled.scenes import Chip, Scene, change_scenes, segmentation_scenes
from geopera.finetune.base import FinetuneError, FinetuneTask, confusion_scores
from geopera.finetune.config import FinetuneConfig
from geopera.models.adapters import ChangeSegmenter, DPTSegmenter, PyramidSegmenter
from geopera.viz.overlays import plot_segmentation


@dataclass(frozen=True)
class DenseHead(TaskSection):
    """The decoder of a segmentation model.

    Attributes:
        decoder: ``upernet``, ``fpn`` or ``dpt``.
        decoder_channels: Decoder width.
        class_weights: Cross-entropy class weights (``optim.balance_classes``), or None.
    """

    decoder: str
    decoder_channels: int
    class_weights: list[float] | None = None


@dataclass(frozen=True)
class ChangeHead(DenseHead):
    """The decoder of a change model (``upernet`` or ``fpn``) and how its two dates meet.

    Attributes:
        fusion: ``diff`` or ``concat``.
    """

    fusion: str = "diff"


def balanced_weights(train: ChipDataset, classes: ClassMap) -> list[float]:
    """Cross-entropy class weights ``sqrt(N / (K * n_k))`` from the training chips' pixels."""
    counts = np.zeros(len(classes.values))
    for c in train.chips:
        labels = train.scenes[c.scene].labels
        if labels is not None:
            idx = classes.encode(labels[c.row : c.row + c.size, c.col : c.col + c.size])
            counts += np.bincount(idx[idx >= 0], minlength=len(counts))
    counts = np.maximum(counts, 1)
    weights: list[float] = np.sqrt(counts.sum() / (len(counts) * counts)).tolist()
    return weights


class SegmentationTask(FinetuneTask):
    """Per-pixel classes from one image: cross-entropy, mIoU and per-class IoU/F1.

    Batches: ``{"image": (B, C, S, S) raw, "mask": (B, S, S) int64, -1 ignored}``.
    """

    Head = DenseHead

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """Images and their label rasters, polygons or label chips."""
        d = config.data
        if not d.images or not d.labels:
            raise FinetuneError("segmentation needs --images and --labels")
        return segmentation_scenes(d.images, d.labels, d.class_field)

    @classmethod
    def class_map(cls, scenes: list[Scene], chips: list[Chip], min_per_class: int) -> ClassMap:
        """The labels' classes in enough chips; two at least."""
        classes, rare = drop_rare_classes(
            ClassMap.from_scenes(scenes), scenes, chips, min_per_class
        )
        if rare and len(classes.values) >= 2:
            note(
                f"class(es) {rare} are in fewer than {min_per_class} chips: left out (their "
                "pixels are unlabelled; --min-per-class)"
            )
        if len(classes.values) < 2:
            raise FinetuneError(
                f"the labels hold {len(classes.values)} class(es) {classes.values} in at least "
                f"{min_per_class} chips; segmentation needs two (without --class-field, polygons "
                "are class 1 and the rest class 0; lower --min-per-class to keep rarer classes)"
            )
        return classes

    @classmethod
    def head_section(
        cls, config: FinetuneConfig, train: ChipDataset, classes: ClassMap
    ) -> TaskSection:
        """The decoder, and class weights when ``optim.balance_classes`` asks for them."""
        weights = balanced_weights(train, classes) if config.optim.balance_classes else None
        return DenseHead(config.model.decoder, config.model.decoder_channels, weights)

    class_weights: Tensor | None

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__(spec)
        k = self.num_classes
        weights = cast(DenseHead, spec.head).class_weights
        self.register_buffer(
            "class_weights",
            torch.tensor(weights, dtype=torch.float32) if weights else None,
            persistent=False,
        )
        self.confusion = nn.ModuleDict(
            {s: MulticlassConfusionMatrix(k, ignore_index=-1) for s in ("val", "test")}
        )

    def _confusion(self, split: str) -> MulticlassConfusionMatrix:
        return cast(MulticlassConfusionMatrix, self.confusion[split])

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.spec.classes)

    def build_model(self) -> nn.Module:
        """UPerNet/FPN on the ViT pyramid, or smp DPT."""
        s, head = self.spec, cast(DenseHead, self.spec.head)
        if head.decoder == "dpt":
            return DPTSegmenter(s.model, s.in_chans, s.chip_size, len(s.classes), s.model_kwargs)
        return PyramidSegmenter(self.new_vit(), len(s.classes), head.decoder, head.decoder_channels)

    @torch.no_grad()
    def preview(self, sample: dict[str, Any], path: Path, rgb: list[int]) -> None:
        """The chip, its label mask and the predicted classes."""
        probs = self.predict_chips(self.on_device(sample))
        after = sample["after"][0] if "after" in sample else None
        plot_segmentation(
            sample["image"][0], sample["mask"][0], probs.argmax(1)[0].cpu(),
            self.class_names(), path, rgb, after=after,
        )  # fmt: skip

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on labelled pixels of an augmented batch."""
        keys = [k for k in ("image", "after", "mask") if k in batch]
        batch = dict(zip(keys, self.augment(*(batch[k] for k in keys)), strict=True))
        loss = F.cross_entropy(
            self.logits(batch), batch["mask"], weight=self.class_weights, ignore_index=-1
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        """Log the loss; accumulate the confusion matrix of the labelled pixels."""
        logits = self.logits(batch)
        loss = F.cross_entropy(logits, batch["mask"], ignore_index=-1)
        if torch.isfinite(loss):
            self.log(f"{split}/loss", loss, batch_size=batch["mask"].shape[0])
        self._confusion(split).update(logits.argmax(1), batch["mask"])

    def scores(self, confusion: Tensor) -> dict[str, Any]:
        """Metrics of a confusion matrix (per class and mean)."""
        return confusion_scores(confusion)

    def epoch_scores(self, split: str) -> dict[str, Any]:
        """Per-class and mean scores of the accumulated confusion matrix."""
        metric = self._confusion(split)
        matrix = metric.compute()
        metric.reset()
        scores = self.scores(matrix)
        scores["confusion"] = matrix.tolist()
        scores["pixels"] = int(matrix.sum())
        return scores


class ChangeTask(SegmentationTask):
    """Binary change from two dates: F1, IoU, precision and recall of the change class.

    Batches: ``{"image": before, "after": (B, C, S, S) raw, "mask": (B, S, S), 1 = change}``.
    """

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """Two dates and their change labels."""
        d = config.data
        if not (d.before and d.after and d.labels):
            raise FinetuneError("change detection needs --before, --after and --labels")
        return change_scenes(d.before, d.after, d.labels, d.class_field)

    @classmethod
    def check_settings(cls, config: FinetuneConfig) -> None:
        """Change fuses two dates' feature pyramids: DPT has none."""
        if config.model.decoder == "dpt":
            raise FinetuneError(
                "change detection uses a pyramid decoder: model.decoder upernet or fpn"
            )

    @classmethod
    def class_map(cls, scenes: list[Scene], chips: list[Chip], min_per_class: int) -> ClassMap:
        """No change (0) and change (1)."""
        return ClassMap([0, 1])

    Head = ChangeHead

    @classmethod
    def head_section(
        cls, config: FinetuneConfig, train: ChipDataset, classes: ClassMap
    ) -> TaskSection:
        """The decoder, class weights and the fusion of the two dates."""
        m = config.model
        dense = cast(DenseHead, super().head_section(config, train, classes))
        return ChangeHead(dense.decoder, dense.decoder_channels, dense.class_weights, m.fusion)

    def class_names(self) -> list[str]:
        """No change and change."""
        return ["no change", "change"]

    def build_model(self) -> nn.Module:
        """Siamese ViT + pyramid, per-scale fusion, UPerNet/FPN decoder."""
        head = cast(ChangeHead, self.spec.head)
        return ChangeSegmenter(
            self.new_vit(), head.fusion, head.decoder, head.decoder_channels, num_classes=2
        )

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, 2, S, S) logits."""
        out: Tensor = self.model(self.normalise(batch["image"]), self.normalise(batch["after"]))
        return out

    def scores(self, confusion: Tensor) -> dict[str, Any]:
        """Change-class F1, IoU, precision and recall (+ the per-class scores)."""
        c = confusion.double()
        tp, fp, fn = c[1, 1], c[0, 1], c[1, 0]

        def ratio(a: Tensor, b: Tensor) -> float | None:
            return float(a / b) if b > 0 else None

        out = confusion_scores(confusion)
        out.update(
            {
                "f1": ratio(2 * tp, 2 * tp + fp + fn),
                "iou": ratio(tp, tp + fp + fn),
                "precision": ratio(tp, tp + fp),
                "recall": ratio(tp, tp + fn),
                "per_class_iou": out.pop("iou"),
                "per_class_f1": out.pop("f1"),
            }
        )
        return out
