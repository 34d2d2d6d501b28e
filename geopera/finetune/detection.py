"""Object detection task: torchvision Faster R-CNN on the ViT pyramid, mAP via torchmetrics."""

from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torchmetrics.detection import MeanAveragePrecision

from geopera.core.contracts import FinetunedSpec
from geopera.data.labelled.scenes import Scene, detection_scenes
from geopera.finetune.base import FinetuneError, FinetuneTask
from geopera.finetune.config import FinetuneConfig
from geopera.models.adapters import build_detector
from geopera.viz.overlays import plot_detection


class DetectionTask(FinetuneTask):
    """Boxes with classes: mAP@0.5 and COCO mAP (0.5:0.95).

    Batches: ``{"image": (B, C, S, S) raw, "boxes": [(N_i, 4) xyxy px], "labels": [(N_i,)]}``
    with labels 1..K (0 is background).
    """

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """Images and their boxes (a CSV table, Pascal VOC files or polygons)."""
        d = config.data
        if not d.images or not d.boxes:
            raise FinetuneError("detection needs --images and --boxes")
        return detection_scenes(d.images, d.boxes, d.box_coords, d.class_field)

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__(spec)
        self.map = nn.ModuleDict(
            {s: MeanAveragePrecision(iou_type="bbox", class_metrics=True) for s in ("val", "test")}
        )

    def _map(self, split: str) -> MeanAveragePrecision:
        return cast(MeanAveragePrecision, self.map[split])

    def build_model(self) -> nn.Module:
        """Faster R-CNN with the ViT pyramid as backbone."""
        s = self.spec
        return build_detector(self.new_vit(), len(s.classes), s.chip_size, s.in_chans)

    def _targets(self, batch: dict[str, Any]) -> list[dict[str, Tensor]]:
        return [
            {"boxes": b, "labels": lab}
            for b, lab in zip(batch["boxes"], batch["labels"], strict=True)
        ]

    def _hflip(self, batch: dict[str, Any]) -> dict[str, Any]:
        if not self.spec.augment or not bool(torch.randint(0, 2, ()).item()):
            return batch
        width = batch["image"].shape[-1]
        boxes = [
            torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)
            for b in batch["boxes"]
        ]
        return {**batch, "image": batch["image"].flip(-1), "boxes": boxes}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Sum of Faster R-CNN's RPN and box-head losses."""
        batch = self._hflip(batch)
        losses = self.model(list(self.normalise(batch["image"])), self._targets(batch))
        loss: Tensor = sum(losses.values())
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["boxes"]))
        return loss

    @torch.no_grad()
    def preview(self, sample: dict[str, Any], path: Path, rgb: list[int]) -> None:
        """The chip with its true boxes and the predicted ones (with scores)."""
        pred = self.predict_chips(self.on_device(sample))[0]
        boxes, scores = pred["boxes"].cpu(), pred["scores"].cpu()
        plot_detection(sample["image"][0], sample["boxes"][0], boxes, scores, path, rgb)

    def predict_chips(self, batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """One ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}`` per chip."""
        out: list[dict[str, Tensor]] = self.model(list(self.normalise(batch["image"])))
        return out

    def eval_step(self, batch: dict[str, Any], split: str) -> None:
        """Accumulate the detections for mAP."""
        preds = self.predict_chips(batch)
        self._map(split).update(preds, self._targets(batch))

    def epoch_scores(self, split: str) -> dict[str, Any]:
        """COCO mAP, mAP@0.5, mAP@0.75, mAR@100 and per-class mAP (None without truth)."""
        metric = self._map(split)
        raw = metric.compute()
        metric.reset()
        scores: dict[str, Any] = {}
        for key in ("map", "map_50", "map_75", "mar_100"):
            value = float(raw[key])
            scores[key] = None if value < 0 else value  # torchmetrics: -1 = no ground truth
        per_class = raw.get("map_per_class")
        if per_class is not None and per_class.numel() == len(self.spec.classes):
            scores["map_per_class"] = {
                str(n): float(v)
                for n, v in zip(self.spec.classes, per_class.flatten().tolist(), strict=True)
            }
        return scores
