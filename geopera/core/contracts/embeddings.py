"""What a ``geopera embed`` folder holds (``embeddings.json``)."""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from geopera.core.contracts.backbone import read_identities
from geopera.core.contracts.base import ContractError, _Versioned
from geopera.core.identity import BandIdentity
from geopera.core.normalisation import BandStats


@dataclass
class EmbeddingRaster:
    """One embedded raster of an :class:`EmbeddingSet`.

    Attributes:
        name: Output name (file stem).
        source: The input raster (path or URL).
        crs: Its CRS.
        token_rows: Rows of the patch-level grid.
        token_cols: Columns of the patch-level grid.
        patches: Patch-level COG file name, or None (``--level chip``).
        chips: Chip-level GeoParquet file name, or None (``--level patch``).
        chips_written: Chip rows written (None without chips).
        datetime: Acquisition time, when the raster says.
        bands: 1-based band indices read from the raster.
        band_names: Their names.
        band_rule: ``by-name`` or ``as-is``.
        ssl_method: The backbone's pretraining method, when known.
        normalisation: The raster's band statistics.
        nodata: The nodata value used.
        band_identities: What each band read measures, in model order (None: unknown, or a
            manifest of an earlier release).
    """

    name: str
    source: str
    crs: str
    token_rows: int
    token_cols: int
    patches: str | None
    chips: str | None
    chips_written: int | None
    datetime: str | None
    bands: list[int]
    band_names: list[str]
    band_rule: str
    ssl_method: str | None
    normalisation: BandStats
    nodata: float | None
    band_identities: list[BandIdentity | None] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmbeddingRaster":
        """Read one entry of ``embeddings.json``.

        Args:
            data: The entry.

        Returns:
            The raster.

        Raises:
            ContractError: On missing or unknown fields.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ContractError(
                f"embeddings manifest: a raster entry has missing {missing} / unknown {unknown}"
            )
        identities = data.get("band_identities")
        return cls(
            **{
                **data,
                "normalisation": BandStats.from_dict(data["normalisation"]),
                "band_identities": read_identities(identities) if identities else None,
            }
        )


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
        rasters: One entry per input raster.
        roi: The ROI text given, if any.
        geopera_version: Version that wrote it.
    """

    KIND: ClassVar[str] = "embeddings manifest (embeddings.json)"
    FILE: ClassVar[str] = "embeddings.json"
    NESTED: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "rasters": lambda rows: [EmbeddingRaster.from_dict(r) for r in rows],
    }

    weights: str
    model: str
    token_size: int
    chip_size: int
    level: str
    dtype: str
    rasters: list[EmbeddingRaster]
    roi: str | None = None
    geopera_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict; a raster without band identities leaves the key out."""
        out = super().to_dict()
        for entry in out["rasters"]:
            if entry.get("band_identities") is None:
                entry.pop("band_identities", None)
        return out
