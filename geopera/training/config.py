"""Pretraining configuration: typed sections read from YAML, every key overridable.

A config file has the sections ``data``, ``model``, ``views``, ``optim`` and ``trainer`` (see
``configs/pretrain/*.yaml``). Keys not given keep their defaults; unknown keys are errors that
list the valid ones. On the command line, ``--set section.key=value`` overrides any key (values
are parsed as YAML: ``--set optim.lr=5e-4``, ``--set data.bands=[B4,B3,B2]``).
"""

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from geopera.errors import GeoperaError

C = TypeVar("C")


class ConfigError(GeoperaError):
    """The configuration file or an override is invalid."""


@dataclass
class DataSection:
    """Where patches come from (see :class:`geopera.data.datamodule.PretrainDataModule`)."""

    archive: list[str] = field(default_factory=list)
    roi: str | None = None
    bands: list[str] | str | None = "rgb"
    sources: list[str] | None = None
    patch_size: int = 128
    batch_size: int = 16
    num_workers: int = 2
    max_invalid: float = 0.1
    stats_patches: int = 32
    seed: int = 0
    probe: str | None = None


@dataclass
class ModelSection:
    """Backbone, heads and loss weights (see :class:`geopera.models.pera.PerAConfig`)."""

    backbone: str = "vit_small_patch16_224"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    student_ratio: float = 0.2
    teacher_ratio: float = 0.6
    drop_path_rate: float = 0.1
    prototypes: int = 4096
    head_hidden_dim: int = 1024
    head_bottleneck_dim: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    center_momentum: float = 0.9
    dino_weight: float = 1.0
    koleo_weight: float = 0.1
    pixel_weight: float = 0.01


@dataclass
class ViewsSection:
    """Crop pairs and colour changes (see :class:`geopera.transforms.views.ViewsConfig`)."""

    global_size: int = 96
    local_size: int = 48
    n_global: int = 2
    n_local: int = 4
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    local_scale: list[float] = field(default_factory=lambda: [0.05, 0.4])
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    student_jitter_p: float = 0.8
    teacher_jitter_p: float = 0.1
    grayscale_p: float = 0.1


@dataclass
class OptimSection:
    """AdamW and schedules, in optimiser steps (see :class:`PerASchedules`)."""

    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_steps: int = 20
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2
    momentum: float = 0.992
    momentum_end: float = 1.0
    teacher_temp_start: float = 0.03
    teacher_temp: float = 0.05
    teacher_temp_warmup_steps: int = 30
    clip_grad: float = 3.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 2e-5


@dataclass
class TrainerSection:
    """Run length, devices, logging and checkpoints."""

    max_steps: int = 100
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"
    compile: bool = False
    log_every: int = 5
    checkpoint_every: int = 50
    collapse_std: float = 1e-4
    collapse_entropy_fraction: float = 0.02
    collapse_patience: int = 3
    preview_patches: int = 4
    probe_every: int = 25
    probe_k: int = 5


@dataclass
class PretrainConfig:
    """The whole pretraining configuration."""

    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    views: ViewsSection = field(default_factory=ViewsSection)
    optim: OptimSection = field(default_factory=OptimSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML and checkpoints)."""
        return dataclasses.asdict(self)


def _section_fields(config: type[Any] | Any, section: str) -> dict[str, dataclasses.Field[Any]]:
    cls: Any = {f.name: f.default_factory for f in dataclasses.fields(config)}[section]
    return {f.name: f for f in dataclasses.fields(cls)}


def _check(config: type[Any] | Any, section: str, key: str) -> None:
    sections = [f.name for f in dataclasses.fields(config)]
    if section not in sections:
        raise ConfigError(f"unknown config section {section!r}; sections are {', '.join(sections)}")
    fields = _section_fields(config, section)
    if key not in fields:
        raise ConfigError(
            f"unknown key {section}.{key}; keys of {section!r} are: {', '.join(fields)}"
        )


def _coerce(config: type[Any] | Any, section: str, key: str, value: Any) -> Any:
    """Convert a parsed value to the field's declared scalar type (YAML reads ``1e9`` as text)."""
    declared = _section_fields(config, section)[key].type
    name = declared if isinstance(declared, str) else getattr(declared, "__name__", "")
    if value is None or name not in ("float", "int", "bool"):
        return value
    if name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(f"{section}.{key} must be true or false, got {value!r}")
    try:
        if isinstance(value, bool):
            raise ValueError(value)
        number = float(value)
        if name == "int" and not number.is_integer():
            raise ValueError(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{section}.{key} must be a number ({name}), got {value!r}") from err
    return int(number) if name == "int" else number


def from_dict[C](raw: dict[str, Any] | None, cls: type[C] = PretrainConfig) -> C:  # type: ignore[assignment]
    """Build a config from a nested dict, checking every key.

    Args:
        raw: ``{section: {key: value}}``; missing keys keep their defaults.
        cls: The config class (a dataclass of section dataclasses).

    Returns:
        The config.

    Raises:
        ConfigError: On unknown sections or keys, or a section that is not a mapping.
    """
    config = cls()
    for section, values in (raw or {}).items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        for key, value in values.items():
            _check(cls, section, key)
            setattr(getattr(config, section), key, _coerce(cls, section, key, value))
    return config


def load_config[C](path: str | Path | None, cls: type[C] = PretrainConfig) -> C:  # type: ignore[assignment]
    """Read a YAML config (None: the defaults).

    Args:
        path: YAML file.
        cls: The config class (a dataclass of section dataclasses).

    Returns:
        The config.

    Raises:
        FileNotFoundError: If the file does not exist.
        ConfigError: If it is not valid YAML or has unknown keys.
    """
    if path is None:
        return cls()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist (see configs/)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return from_dict(raw, cls)


def apply_override(config: Any, assignment: str) -> None:
    """Apply one ``section.key=value`` override (value parsed as YAML).

    Args:
        config: The config to change in place.
        assignment: E.g. ``"optim.lr=1e-3"``.

    Raises:
        ConfigError: If the assignment is malformed or names an unknown key.
    """
    if "=" not in assignment or "." not in assignment.split("=", 1)[0]:
        raise ConfigError(f"override {assignment!r} must look like section.key=value")
    dotted, text = assignment.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    _check(config, section, key)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML ({err})") from err
    setattr(getattr(config, section), key, _coerce(config, section, key, value))


def dump_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML.

    Args:
        config: The config.
        path: Output file.
    """
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
