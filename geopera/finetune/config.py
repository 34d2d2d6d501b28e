"""Fine-tuning configuration: typed sections read from YAML, every key overridable.

Sections ``data``, ``model``, ``optim`` and ``trainer`` (see ``configs/finetune/*.yaml``). The
command line fills the data paths (``--images``, ``--labels``...) and overrides any key with
``--set section.key=value``, exactly as for pretraining.
"""

from dataclasses import dataclass, field
from typing import Any

from geopera.core.contracts import FinetuneOptim


@dataclass
class FinetuneData:
    """Labelled data (see :mod:`geopera.data.labelled`)."""

    images: list[str] = field(default_factory=list)
    labels: str | None = None
    class_field: str | None = None
    ignore_value: int | None = None
    boxes: str | None = None
    box_coords: str = "pixel"
    before: str | None = None
    after: str | None = None
    bands: list[str] | str | None = None
    chip_size: int = 64
    block_chips: int = 2
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    min_box_fraction: float = 0.5
    min_per_class: int = 2
    batch_size: int = 8
    num_workers: int = 0
    seed: int = 0


@dataclass
class FinetuneModel:
    """Backbone and task head (see :mod:`geopera.models.adapters`)."""

    weights: str | None = None
    backbone: str = "vit_small_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    decoder: str = "upernet"
    decoder_channels: int = 128
    fusion: str = "diff"
    freeze_backbone: bool = False
    band_map: dict[str, str] = field(default_factory=dict)
    extra_bands: str = "ignore"


@dataclass
class FinetuneTrainer:
    """Run length, devices and outputs."""

    max_steps: int = 200
    val_every: int = 50
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    fast_dev_run: bool = False
    preview_chips: int = 4
    augment: bool = True


@dataclass
class FinetuneConfig:
    """The whole fine-tuning configuration."""

    data: FinetuneData = field(default_factory=FinetuneData)
    model: FinetuneModel = field(default_factory=FinetuneModel)
    optim: FinetuneOptim = field(default_factory=FinetuneOptim)
    trainer: FinetuneTrainer = field(default_factory=FinetuneTrainer)
