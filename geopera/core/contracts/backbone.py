"""What a pretrained backbone is (``backbone.json``), and a published one (``weights.json``)."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from geopera.core.contracts.base import _Versioned
from geopera.core.identity import BandIdentity


def read_identities(raw: list[dict[str, Any] | None]) -> list[BandIdentity | None]:
    """Band identities from JSON (None where unknown)."""
    return [BandIdentity.from_dict(d) if d else None for d in raw]


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
        band_identities: What each input measures (common name, centre wavelength), in input
            order; None when unknown (bands are then matched by name or order).
        normalisation: ``mean`` and ``std`` per band (raw units), ``units``, ``per_source``
            percentiles.
        resolution: Pixel size per source name.
        ssl_method: Pretraining method (``pera``).
        roi: The ROI the patches came from (bounds, CRS, area).
        sources: Source descriptions (name, CRS, resolution, bands, dtype, files).
        steps: Optimiser steps of pretraining.
        geopera_version: Version that wrote it.
        load_with: A one-line recipe to load it with timm.
        init: The weights pretraining started from (``--init``), or None for random ones.
        shards: The shard set it trained on (``location`` and the ``sha256`` of its
            ``shards.json``), or None when patches were sampled from an archive.
    """

    FORMAT: ClassVar[int] = 3
    KIND: ClassVar[str] = "backbone description (backbone.json)"
    FILE: ClassVar[str] = "backbone.json"
    NESTED: ClassVar[dict[str, Callable[[Any], Any]]] = {"band_identities": read_identities}
    #: The weights beside it.
    WEIGHTS_FILE: ClassVar[str] = "backbone.pth"

    model: str
    in_chans: int
    token_size: int
    img_size: int
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    bands: list[str] | None = None
    band_identities: list[BandIdentity | None] | None = None
    normalisation: dict[str, Any] = field(default_factory=dict)
    resolution: dict[str, Any] = field(default_factory=dict)
    ssl_method: str | None = None
    roi: dict[str, Any] | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    steps: int | None = None
    geopera_version: str | None = None
    load_with: str | None = None
    init: str | None = None
    shards: dict[str, str] | None = None


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
    FILE: ClassVar[str] = "weights.json"

    enum_name: str
    member: str
    file_name: str
    sha256: str
    url: str
    mean: list[float]
    std: list[float]
    meta: dict[str, Any]
