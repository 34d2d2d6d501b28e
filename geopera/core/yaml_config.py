"""Typed configurations read from YAML, every key overridable from the command line.

A command's configuration is a dataclass of *sections*, each a dataclass of keys (pretraining:
``data``, ``model``, ``views``, ``optim``, ``trainer``; fine-tuning: ``data``, ``model``,
``optim``, ``trainer``). Sections may be frozen library dataclasses (e.g. the PerA model and view
settings), so that each default is written once, where the library defines it. Keys not given
keep their defaults; unknown keys are errors that list the valid ones. On the command line,
``--set section.key=value`` overrides any key (values are parsed as YAML: ``--set optim.lr=5e-4``,
``--set data.bands=[B4,B3,B2]``).
"""

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from geopera.core.errors import GeoperaError
from geopera.core.outputs import write_atomic

#: The repository's ``configs/`` folder (shipped configs; present in a source checkout).
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(GeoperaError):
    """The configuration file or an override is invalid."""


def shipped_config(name: str) -> Path:
    """The path of a config shipped in ``configs/`` (e.g. ``pretrain/pera_vit_tiny_cpu.yaml``).

    Args:
        name: Path relative to ``configs/``.

    Returns:
        The file.

    Raises:
        FileNotFoundError: If it is not there (geopera installed without its source tree).
    """
    path = CONFIGS_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"shipped config {name} not found under {CONFIGS_DIR}; pass --config FILE "
            "(copy one from the repository's configs/ folder)"
        )
    return path


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
    """Convert a parsed value to the field's declared type.

    Scalars are checked (YAML 1.1 reads ``1e9`` as text); lists become tuples where the field
    is a tuple.
    """
    declared = _section_fields(config, section)[key].type
    if typing.get_origin(declared) is tuple and isinstance(value, list | tuple):
        return tuple(value)
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


def set_key(config: Any, section: str, key: str, value: Any) -> None:
    """Set one key of a config in place (checked and typed; frozen sections are replaced).

    Args:
        config: The config.
        section: Section name.
        key: Key name.
        value: The new value (a parsed YAML value, or a Python value of the right kind).

    Raises:
        ConfigError: On an unknown section or key, or a value of the wrong kind.
    """
    _check(config, section, key)
    value = _coerce(config, section, key, value)
    setattr(config, section, dataclasses.replace(getattr(config, section), **{key: value}))


def from_dict[C](raw: dict[str, Any] | None, cls: type[C]) -> C:
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
            set_key(config, section, key, value)
    return config


def load_config[C](path: str | Path, cls: type[C]) -> C:
    """Read a YAML config.

    Args:
        path: YAML file.
        cls: The config class (a dataclass of section dataclasses).

    Returns:
        The config.

    Raises:
        FileNotFoundError: If the file does not exist.
        ConfigError: If it is not valid YAML or has unknown keys.
    """
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
    set_key(config, section, key, value)


def to_plain(value: Any) -> Any:
    """A config (or any dataclass) as nested dicts and lists: YAML- and checkpoint-safe.

    Args:
        value: A dataclass instance, or a value inside one.

    Returns:
        Plain dicts, lists and scalars (tuples become lists).
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def dump_config(config: Any, path: Path) -> None:
    """Write the resolved config as YAML.

    Args:
        config: The config.
        path: Output file.
    """
    write_atomic(path, yaml.safe_dump(to_plain(config), sort_keys=False))
