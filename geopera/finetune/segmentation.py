"""Semantic segmentation and change detection tasks (dense, per-pixel classes)."""

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassConfusionMatrix

from geopera.core.contracts import FinetunedSpec
from geopera.finetune.base import FinetuneTask, confusion_scores
from geopera.models.adapters import ChangeSegmenter, DPTSegmenter, PyramidSegmenter


class SegmentationTask(FinetuneTask):
    """Per-pixel classes from one image: cross-entropy, mIoU and per-class IoU/F1.

    Batches: ``{"image": (B, C, S, S) raw, "mask": (B, S, S) int64, -1 ignored}``.
    """

    kind = "segmentation"
    class_weights: Tensor | None

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__(spec)
        k = self.num_classes
        weights = spec.class_weights
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
        s = self.spec
        if s.decoder == "dpt":
            return DPTSegmenter(s.model, s.in_chans, s.chip_size, len(s.classes), s.model_kwargs)
        return PyramidSegmenter(self.new_vit(), len(s.classes), s.decoder, s.decoder_channels)

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, K, S, S) logits of a batch of raw chips."""
        out: Tensor = self.model(self.normalise(batch["image"]))
        return out

    def predict_chips(self, batch: dict[str, Tensor]) -> Tensor:
        """(B, K, S, S) class probabilities."""
        return self.logits(batch).softmax(1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on labelled pixels of an augmented batch."""
        keys = [k for k in ("image", "after", "mask") if k in batch]
        batch = dict(zip(keys, self.augment(*(batch[k] for k in keys)), strict=True))
        loss = F.cross_entropy(
            self.logits(batch), batch["mask"], weight=self.class_weights, ignore_index=-1
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        logits = self.logits(batch)
        loss = F.cross_entropy(logits, batch["mask"], ignore_index=-1)
        if torch.isfinite(loss):
            self.log(f"{split}/loss", loss, batch_size=batch["mask"].shape[0])
        self._confusion(split).update(logits.argmax(1), batch["mask"])

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the validation confusion matrix."""
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate the test confusion matrix."""
        self._eval_step(batch, "test")

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

    kind = "change"

    def build_model(self) -> nn.Module:
        """Siamese ViT + pyramid, per-scale fusion, UPerNet/FPN decoder."""
        s = self.spec
        return ChangeSegmenter(
            self.new_vit(), s.fusion, s.decoder, s.decoder_channels, num_classes=2
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
