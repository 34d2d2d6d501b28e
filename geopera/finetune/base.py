"""What the fine-tuning tasks share: the spec, normalisation, freezing, optimiser, augmentation.

A task is built from a :class:`~geopera.core.contracts.FinetunedSpec` (saved, as a plain dict
with its format version, in the checkpoint's hyper-parameters), so that ``geopera predict``
rebuilds the exact model from ``model.ckpt`` without the training data or the pretrained
weights.
"""

import math
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from lightning import LightningModule
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from geopera.core.contracts import FinetunedSpec, TaskSection
from geopera.core.errors import GeoperaError
from geopera.core.schedules import warmup_cosine
from geopera.data.labelled.chips import ChipDataset, ClassMap
from geopera.data.labelled.scenes import Chip, Scene
from geopera.finetune.config import FinetuneConfig
from geopera.models.adapters import vit_of
from geopera.models.loading import build_vit
from geopera.models.vit import decays, no_decay_names
from geopera.transforms.normalise import scale_unit


class FinetuneError(GeoperaError):
    """The fine-tuning inputs or settings cannot work."""


class FinetuneTask(LightningModule):
    """Base class of the fine-tuning tasks: a task class owns what differs between tasks.

    Its labels and scenes (:meth:`scenes`, :meth:`dataset`), classes (:meth:`class_map`), its
    section of the spec (:attr:`Head`, :meth:`head_section`), head and loss
    (:meth:`build_model`, the Lightning steps), metrics (:meth:`epoch_scores`) and previews
    (:meth:`preview`). Its predict writer is named by its record in
    :mod:`geopera.finetune.registry`.

    Args:
        spec: Model, bands, classes, normalisation and optimiser settings.
    """

    #: The task's section of the spec (a :class:`TaskSection` subclass with its fields).
    Head: ClassVar[type[TaskSection]] = TaskSection
    p2: Tensor
    p98: Tensor
    mean: Tensor
    std: Tensor

    def __init__(self, spec: FinetunedSpec) -> None:
        super().__init__()
        self.save_hyperparameters({"spec": spec.to_dict()})
        self.spec = spec
        norm = spec.norm
        self.register_buffer("p2", torch.tensor(norm.p2, dtype=torch.float32), persistent=False)
        self.register_buffer("p98", torch.tensor(norm.p98, dtype=torch.float32), persistent=False)
        mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)  # (1, C, 1, 1)
        std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.model = self.build_model()
        self.frozen = bool(spec.freeze_backbone)
        if self.frozen:
            for p in self.vit.parameters():
                p.requires_grad_(False)
        self.results: dict[str, dict[str, Any]] = {}

    # -- data ----------------------------------------------------------------------------------

    @classmethod
    def scenes(cls, config: FinetuneConfig) -> list[Scene]:
        """The labelled scenes ``config.data`` names for this task (subclasses).

        Raises:
            FinetuneError: If an input the task needs is missing.
        """
        raise NotImplementedError

    @classmethod
    def check_settings(cls, config: FinetuneConfig) -> None:
        """Refuse settings this task cannot train with (a one-line ``FinetuneError``)."""

    @classmethod
    def dataset(
        cls, config: FinetuneConfig, scenes: list[Scene], chips: list[Chip], bands: list[int],
        classes: ClassMap,
    ) -> ChipDataset:  # fmt: skip
        """The chips of one split as samples (see :class:`ChipDataset`)."""
        return ChipDataset(scenes, chips, bands, classes, config.data.min_box_fraction)

    @classmethod
    def head_section(
        cls, config: FinetuneConfig, train: ChipDataset, classes: ClassMap
    ) -> TaskSection:
        """The task's section of the spec, from the config and the training chips."""
        return cls.Head()

    @classmethod
    def class_map(cls, scenes: list[Scene], chips: list[Chip], min_per_class: int) -> ClassMap:
        """The classes it learns: those of the labels."""
        return ClassMap.from_scenes(scenes)

    def value_name(self) -> str:
        """What a continuous output holds (the legend of ``geopera view``)."""
        return self.spec.task

    def class_names(self) -> list[str]:
        """One name per output class, for previews and predict outputs."""
        return [str(v) for v in self.spec.classes]

    def preview(self, sample: dict[str, Any], path: Path, rgb: list[int]) -> None:
        """Draw one validation chip with its truth and prediction (subclasses).

        Args:
            sample: A collated batch of one chip (on the CPU).
            path: The PNG to write.
            rgb: Band indices shown as red, green and blue.
        """
        raise NotImplementedError

    def on_device(self, sample: dict[str, Any]) -> dict[str, Any]:
        """A collated batch with its tensors on the model's device."""
        device = next(self.parameters()).device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in sample.items()}

    # -- model ---------------------------------------------------------------------------------

    def build_model(self) -> nn.Module:
        """The task's network (subclasses)."""
        raise NotImplementedError

    def new_vit(self) -> Any:
        """A fresh ViT of the spec's architecture (weights are loaded by the caller)."""
        s = self.spec
        return build_vit(s.model, s.in_chans, s.chip_size, s.model_kwargs)

    @property
    def vit(self) -> VisionTransformer:
        """The backbone."""
        return vit_of(self.model)

    def normalise(self, x: Tensor) -> Tensor:
        """Raw (B, C, H, W) -> percentile-scaled and standardised (B, C, H, W)."""
        return (scale_unit(x, self.p2, self.p98) - self.mean) / self.std

    def train(self, mode: bool = True) -> "FinetuneTask":
        """Keep a frozen backbone in eval mode (no dropout / drop-path) while training."""
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    # -- augmentation ----------------------------------------------------------------------------

    def augment(self, *tensors: Tensor) -> list[Tensor]:
        """One random flip / 90-degree rotation, the same for every tensor of the batch.

        Args:
            *tensors: (..., H, W) tensors (images, masks) of one batch.

        Returns:
            The transformed tensors.
        """
        if not self.spec.augment:
            return list(tensors)
        k = int(torch.randint(0, 4, ()).item())
        flip = bool(torch.randint(0, 2, ()).item())
        out = []
        for t in tensors:
            t = torch.rot90(t, k, dims=(-2, -1))
            out.append(torch.flip(t, dims=(-1,)) if flip else t)
        return out

    # -- optimiser -------------------------------------------------------------------------------

    def param_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: backbone layers (with layer-wise decay if set) and the head.

        The backbone's base rate is ``lr``; the head trains at ``lr * head_lr_scale``. With
        ``layer_decay`` d, block i of n gets ``lr * d ** (n - i)`` and the embeddings
        ``lr * d ** (n + 1)``.
        """
        o = self.spec.optim
        lr, decay = o.lr, o.layer_decay
        depth = len(getattr(self.vit, "blocks", []))
        backbone_ids = {id(p) for p in self.vit.parameters()}
        groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
        exempt = no_decay_names(self)
        for name, p in self.vit.named_parameters():
            if not p.requires_grad:
                continue
            scale = 1.0
            if decay is not None:
                if name.startswith("blocks."):
                    layer = int(name.split(".")[1]) + 1
                elif name.startswith(("cls_token", "pos_embed", "patch_embed", "reg_token")):
                    layer = 0
                else:
                    layer = depth + 1
                scale = float(decay) ** (depth + 1 - layer)
            groups.setdefault((lr * scale, not decays(name, p, exempt)), []).append(p)
        head_lr = lr * o.head_lr_scale
        for name, p in self.named_parameters():
            if p.requires_grad and id(p) not in backbone_ids:
                groups.setdefault((head_lr, not decays(name, p, exempt)), []).append(p)
        wd = o.weight_decay
        return [
            {"params": ps, "lr": g_lr, "initial_lr": g_lr, "weight_decay": 0.0 if no_wd else wd}
            for (g_lr, no_wd), ps in groups.items()
        ]

    def configure_optimizers(self) -> Any:
        """AdamW, linear warm-up then cosine decay to 0 over ``max_steps`` (per step)."""
        optimizer = torch.optim.AdamW(self.param_groups())
        total = max(1, self.spec.optim.max_steps)
        warmup = min(self.spec.optim.warmup_steps, total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(warmup_cosine, warmup=warmup, total=total, peak=1.0, floor=0.0)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- evaluation --------------------------------------------------------------------------------

    def eval_step(self, batch: dict[str, Any], split: str) -> None:
        """Accumulate a batch's metrics of ``split`` (subclasses)."""
        raise NotImplementedError

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the validation metrics."""
        self.eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Accumulate the test metrics."""
        self.eval_step(batch, "test")

    def epoch_scores(self, split: str) -> dict[str, Any]:
        """Metrics accumulated over ``split`` (subclasses; resets the accumulators)."""
        raise NotImplementedError

    def _finish_epoch(self, split: str) -> None:
        scores = self.epoch_scores(split)
        self.results[split] = scores
        for key, value in scores.items():
            if isinstance(value, float):
                self.log(f"{split}/{key}", value)

    def on_validation_epoch_end(self) -> None:
        """Compute and log validation metrics (kept in ``self.results["val"]``)."""
        self._finish_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Compute and log test metrics (kept in ``self.results["test"]``)."""
        self._finish_epoch("test")

    # -- inference ---------------------------------------------------------------------------------

    def logits(self, batch: dict[str, Tensor]) -> Tensor:
        """The network's output for a batch of raw chips (``batch["image"]``: (B, C, S, S))."""
        out: Tensor = self.model(self.normalise(batch["image"]))
        return out

    def predict_chips(self, batch: dict[str, Tensor]) -> Any:
        """What ``geopera predict`` blends or merges: class probabilities by default.

        The softmax over dimension 1 of the logits: (B, K) per chip or (B, K, S, S) per pixel.
        Tasks whose output is not a class distribution (boxes, values) override it.
        """
        return self.logits(batch).softmax(1)


def confusion_scores(confusion: Tensor) -> dict[str, Any]:
    """Per-class IoU and F1 from a (K, K) confusion matrix (rows: truth, columns: prediction).

    Classes absent from both truth and prediction score NaN and are left out of the means.

    Args:
        confusion: (K, K) counts.

    Returns:
        ``{"iou": [K], "f1": [K], "miou", "mf1", "accuracy"}`` (NaN as None).
    """
    c = confusion.double()
    tp = c.diag()
    fp = c.sum(0) - tp
    fn = c.sum(1) - tp
    iou = tp / (tp + fp + fn)  # NaN where the class is absent everywhere
    f1 = 2 * tp / (2 * tp + fp + fn)
    total = c.sum()

    def clean(t: Tensor) -> list[float | None]:
        return [None if math.isnan(v) else float(v) for v in t.tolist()]

    def mean(t: Tensor) -> float | None:
        valid = t[~torch.isnan(t)]
        return float(valid.mean()) if len(valid) else None

    return {
        "iou": clean(iou),
        "f1": clean(f1),
        "miou": mean(iou),
        "mf1": mean(f1),
        "accuracy": float(tp.sum() / total) if total > 0 else None,
    }
