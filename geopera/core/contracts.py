"""Typed, versioned files that one stage writes and another reads.

* :class:`BackboneCard` (``backbone.json``): what a pretrained backbone is, written by
  ``geopera pretrain`` beside ``backbone.pth``, read by ``finetune``, ``publish`` and everything
  that resolves ``--weights``.
* :class:`FinetunedSpec`: what rebuilds a fine-tuned model, stored as the ``spec`` hyper-parameter
  of ``model.ckpt`` by ``geopera finetune``, read by ``geopera predict``.

Each carries ``format_version``. Files without one come from geopera 0.1 (format 0) and are
upgraded on reading; a version newer than this geopera knows is refused with a clear message.
Names mean one thing: ``token_size`` is the ViT's patch (token) size in pixels, never the size
of a sampled patch or chip.
"""

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from geopera.core.errors import GeoperaError
from geopera.core.outputs import write_json


class ContractError(GeoperaError):
    """A stage's file cannot be read: unknown format version, or missing/unknown fields."""


@dataclass
class _Versioned:
    """Shared reading and writing of a versioned JSON contract."""

    #: Current format version (written by this geopera).
    FORMAT: ClassVar[int] = 1
    #: What the file is, for messages.
    KIND: ClassVar[str] = "file"

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Turn an older format's fields into the current ones (subclasses)."""
        return data

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (``format_version`` included)."""
        return {"format_version": self.FORMAT, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        """JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "") -> Self:
        """Read a dict of any known format version.

        Args:
            data: The fields, with ``format_version`` (absent: format 0).
            origin: Where it came from, for messages.

        Returns:
            The contract.

        Raises:
            ContractError: On an unknown version, or missing or unknown fields.
        """
        where = f" in {origin}" if origin else ""
        if not isinstance(data, dict):
            raise ContractError(
                f"{cls.KIND}{where} must be a JSON object, got {type(data).__name__}"
            )
        data = dict(data)
        version = data.pop("format_version", 0)
        if not isinstance(version, int) or not 0 <= version <= cls.FORMAT:
            raise ContractError(
                f"{cls.KIND}{where} has format_version {version!r}; this geopera reads formats "
                f"0 to {cls.FORMAT}: upgrade geopera to read it"
            )
        data = cls._upgrade(data, version)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        required = {
            n
            for n, f in fields.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if unknown or missing:
            problems = [f"missing {', '.join(missing)}"] if missing else []
            problems += [f"unknown {', '.join(unknown)}"] if unknown else []
            raise ContractError(
                f"{cls.KIND}{where} (format {version}) is not valid: {'; '.join(problems)}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str, origin: str = "") -> Self:
        """Read JSON text (see :meth:`from_dict`).

        Raises:
            ContractError: If the text is not JSON or not a valid contract.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ContractError(f"{cls.KIND} {origin} is not valid JSON: {err}") from err
        return cls.from_dict(data, origin)

    @classmethod
    def read(cls, path: Path) -> Self:
        """Read a file.

        Raises:
            FileNotFoundError: If it does not exist.
            ContractError: If it is not a valid contract.
        """
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: the {cls.KIND} is needed")
        return cls.from_json(path.read_text(), str(path))

    def write(self, path: Path) -> None:
        """Write the current format atomically."""
        write_json(path, self.to_dict())


@dataclass
class BackboneCard(_Versioned):
    """``backbone.json``: a pretrained ViT backbone and how to use it.

    Attributes:
        model: timm architecture name.
        in_chans: Input bands of the weights.
        token_size: ViT patch (token) size in pixels.
        img_size: Size in pixels that the position embedding was trained for.
        model_kwargs: Extra timm arguments (``embed_dim``, ``depth``...).
        bands: Band names, in input order (None when unknown).
        normalisation: ``mean`` and ``std`` per band (raw units), ``units``, ``per_source``
            percentiles.
        resolution: Pixel size per source name.
        ssl_method: Pretraining method (``pera``).
        roi: The ROI the patches came from (bounds, CRS, area).
        sources: Source descriptions (name, CRS, resolution, bands, dtype, files).
        steps: Optimiser steps of pretraining.
        geopera_version: Version that wrote it.
        load_with: A one-line recipe to load it with timm.
    """

    KIND: ClassVar[str] = "backbone description (backbone.json)"

    model: str
    in_chans: int
    token_size: int
    img_size: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    bands: list[str] | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    resolution: dict[str, Any] = field(default_factory=dict)
    ssl_method: str | None = None
    roi: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    steps: int | None = None
    geopera_version: str | None = None
    load_with: str | None = None

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 0 and "patch_size" in data:  # 0.1 named the token size patch_size
            data["token_size"] = data.pop("patch_size")
        return data


@dataclass
class FinetunedSpec(_Versioned):
    """What rebuilds a fine-tuned model without its training data or pretrained weights.

    Attributes:
        task: ``segmentation``, ``change`` or ``detection``.
        model: timm architecture of the backbone.
        in_chans: Bands the model takes.
        bands: Their names (the data's), in model order.
        data_bands: 0-based band indices in the training rasters, in model order.
        chip_size: Chip size in pixels (the position-embedding grid).
        decoder: ``upernet``, ``fpn`` or ``dpt`` (segmentation and change).
        decoder_channels: Decoder width.
        fusion: How the two dates meet (change): ``diff`` or ``concat``.
        classes: Class values, in output order.
        norm: ``p2``, ``p98`` (per-band percentiles, raw units), ``mean`` and ``std`` (of the
            percentile-scaled chips).
        model_kwargs: Extra timm arguments.
        freeze_backbone: Whether the backbone was frozen.
        augment: Whether training used flips and rotations.
        weights: Where the backbone's weights came from.
        ssl_method: Its pretraining method, when known.
        band_rule: ``by-name``, ``as-is`` or ``adapted`` (see :mod:`geopera.models.loading`).
        optim: Optimiser settings (``lr``, ``head_lr_scale``, ``layer_decay``,
            ``weight_decay``, ``warmup_steps``, ``max_steps``...).
        class_weights: Cross-entropy class weights, or None.
        geopera_version: Version that wrote it.
    """

    KIND: ClassVar[str] = "fine-tuned model spec"

    task: str
    model: str
    in_chans: int
    bands: list[str]
    data_bands: list[int]
    chip_size: int
    decoder: str
    decoder_channels: int
    fusion: str
    classes: list[Any]
    norm: dict[str, list[float]]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    freeze_backbone: bool = False
    augment: bool = True
    weights: str | None = None
    ssl_method: str | None = None
    band_rule: str = "as-is"
    optim: dict[str, Any] = field(default_factory=dict)
    class_weights: list[float] | None = None
    geopera_version: str | None = None

    @classmethod
    def _upgrade(cls, data: dict[str, Any], version: int) -> dict[str, Any]:
        if version == 0 and "width" in data:  # 0.1 named the decoder width "width"
            data["decoder_channels"] = data.pop("width")
        return data


@dataclass
class PublishedWeights(_Versioned):
    """``weights.json``: the data manifest of a ``geopera publish`` folder.

    ``--weights FOLDER`` reads this file and the weights file it names; the folder's generated
    Python module is for TorchGeo users who import it deliberately and is never imported by
    geopera.

    Attributes:
        enum_name: Class name of the generated ``WeightsEnum``.
        member: Member name.
        file_name: The weights file, in the same folder.
        sha256: Its SHA-256 (hex).
        url: Where the file is (to be) hosted.
        mean: Normalisation mean per band (raw units), as in the member's transforms.
        std: Normalisation std per band.
        meta: The member's ``meta`` (``model``, ``in_chans``, ``bands``, ``ssl_method``...).
    """

    KIND: ClassVar[str] = "publish manifest (weights.json)"

    enum_name: str
    member: str
    file_name: str
    sha256: str
    url: str
    mean: list[float]
    std: list[float]
    meta: dict[str, Any]


@dataclass
class EmbeddingSet(_Versioned):
    """``embeddings.json``: what a ``geopera embed`` folder holds, read by ``embed similar``.

    Attributes:
        weights: Where the backbone's weights came from.
        model: timm architecture.
        token_size: Patch (token) size in input pixels: the patch-level grid's cell size.
        chip_size: Chip size in input pixels (one GeoParquet row per chip).
        level: ``patch``, ``chip`` or ``both``.
        dtype: Patch-level storage: ``float16`` or ``int8`` (scale/offset per band).
        rasters: One entry per input: ``name``, ``source``, ``crs``, ``patches`` (COG file name
            or None), ``chips`` (GeoParquet file name or None), ``token_rows``, ``token_cols``,
            ``chips_written``, ``bands``, ``band_names``, ``band_rule``, ``normalisation``,
            ``nodata``, ``datetime``.
        roi: The ROI text given, if any.
        geopera_version: Version that wrote it.
    """

    KIND: ClassVar[str] = "embeddings manifest (embeddings.json)"

    weights: str
    model: str
    token_size: int
    chip_size: int
    level: str
    dtype: str
    rasters: list[dict[str, Any]]
    roi: str | None = None
    geopera_version: str | None = None
