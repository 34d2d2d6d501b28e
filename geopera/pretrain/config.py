"""Pretraining configuration: the sections of ``configs/pretrain/*.yaml``.

Sections ``data``, ``model``, ``views``, ``optim`` and ``trainer``. The ``model`` and ``views``
sections *are* the library's :class:`~geopera.models.pera.PerASettings` and
:class:`~geopera.transforms.views.ViewsConfig`, and ``optim`` extends
:class:`~geopera.pretrain.schedules.ScheduleSettings`: each default is written once, where the
library defines it (the paper's recipe). The shipped YAML files state the values they change
(``pera_vit_tiny_cpu.yaml`` is the command's default). Loading and ``--set`` overrides:
:mod:`geopera.core.yaml_config`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geopera.core.yaml_config import load_config, shipped_config, to_plain
from geopera.data.sampling.datamodule import SamplingSettings
from geopera.models.pera import PerASettings
from geopera.pretrain.schedules import LR_SCALINGS, ScheduleSettings
from geopera.transforms.views import ViewsConfig

#: The config ``geopera pretrain`` uses without ``--config`` (relative to ``configs/``).
DEFAULT_CONFIG = "pretrain/pera_vit_tiny_cpu.yaml"


@dataclass
class DataSection(SamplingSettings):
    """Where patches come from: an archive, an ROI, and how patches are drawn.

    The sampling fields and their defaults are those of ``SamplingSettings``, the defaults of
    :class:`~geopera.data.sampling.datamodule.PretrainDataModule`.

    Attributes:
        archive: Archive paths (empty: the sample archive).
        roi: ROI file, WKT or bbox (``--roi``).
        probe: Labelled points or chips for the kNN probe, or None.
        shards: A ``geopera archive shards`` folder or ``s3://``, ``gs://``, ``https://``
            prefix to stream instead of sampling an archive (``--shards``), or None.
    """

    archive: list[str] = field(default_factory=list)
    roi: str | None = None
    probe: str | None = None
    shards: str | None = None


@dataclass(frozen=True)
class OptimSection(ScheduleSettings):
    """AdamW and the schedules (in optimiser steps).

    ``lr`` is the peak rate for 256 images per step: the run uses ``lr x batch x devices x
    nodes / 256`` (``lr_scaling: linear``, the DINO rule) or ``lr`` itself (``none``).

    Attributes:
        lr_scaling: ``linear`` or ``none``.
        freeze_backbone_steps: Steps during which only the heads learn (the backbones keep
            their ``--init`` weights while the fresh heads warm up).
        clip_grad: Gradient-norm clipping.
        betas: AdamW betas.
        eps: AdamW epsilon.
    """

    lr_scaling: str = "linear"
    freeze_backbone_steps: int = 0
    clip_grad: float = 3.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 2e-5

    def __post_init__(self) -> None:
        if not _number(self.lr) or not self.lr > 0:
            raise ValueError(
                f"optim.lr must be a number above 0, got {self.lr!r} (the peak rate for 256 "
                "images per step)"
            )
        if not _number(self.min_lr) or self.min_lr < 0:
            raise ValueError(f"optim.min_lr must be a number of at least 0, got {self.min_lr!r}")
        steps = self.freeze_backbone_steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"optim.freeze_backbone_steps must be an integer >= 0, got {steps!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ValueError(
                f"optim.lr_scaling must be one of {', '.join(LR_SCALINGS)}, got {self.lr_scaling!r}"
            )


def _number(value: object) -> bool:
    """A real number (YAML gives ints and floats; not a bool, a string or null)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass
class TrainerSection:
    """Run length, devices, logging and checkpoints; ``init``: the weights a run starts from."""

    max_steps: int = 100
    init: str | None = None
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"
    compile: bool = False
    log_every: int = 5
    checkpoint_every: int = 50
    collapse_std: float = 1e-4
    collapse_entropy_fraction: float = 0.02
    collapse_uniform_fraction: float = 0.97
    collapse_rank_fraction: float = 0.25
    collapse_patience: int = 3
    preview_patches: int = 4
    probe_every: int = 25
    probe_k: int = 5
    max_skipped_steps: int = 10


@dataclass
class PretrainConfig:
    """The whole pretraining configuration."""

    data: DataSection = field(default_factory=DataSection)
    model: PerASettings = field(default_factory=PerASettings)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)


def load_pretrain_config(path: str | Path | None = None) -> PretrainConfig:
    """Read a pretraining config (None: the shipped default, :data:`DEFAULT_CONFIG`).

    Args:
        path: YAML file, or None.

    Returns:
        The config.
    """
    return load_config(shipped_config(DEFAULT_CONFIG) if path is None else path, PretrainConfig)


#: Keys a resumed run may change: they do not alter what the weights have learnt so far, nor the
#: data stream or the random draws of the steps to come. Every other key is fixed by the run.
SAFE_ON_RESUME = frozenset(
    {
        "data.cache",
        "data.cache_gb",
        "trainer.max_steps",
        "trainer.accelerator",
        "trainer.devices",
        "trainer.num_nodes",
        "trainer.log_every",
        "trainer.checkpoint_every",
        "trainer.preview_patches",
        "trainer.probe_every",
        "trainer.probe_k",
        "trainer.collapse_std",
        "trainer.collapse_entropy_fraction",
        "trainer.collapse_uniform_fraction",
        "trainer.collapse_rank_fraction",
        "trainer.collapse_patience",
        "trainer.max_skipped_steps",
        "data.num_workers",
    }
)


def config_changes(old: PretrainConfig, new: PretrainConfig) -> dict[str, list[Any]]:
    """The keys whose values differ between two configs.

    Args:
        old: The run's own config.
        new: The config asked for.

    Returns:
        ``{"section.key": [old value, new value]}``, sorted by key.
    """
    a, b = to_plain(old), to_plain(new)
    out: dict[str, list[Any]] = {}
    for section in sorted(a):
        for key in sorted(a[section]):
            if a[section][key] != b[section][key]:
                out[f"{section}.{key}"] = [a[section][key], b[section][key]]
    return out
