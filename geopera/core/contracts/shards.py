"""``shards.json``: what a ``geopera archive shards`` folder holds, for the loader streaming it."""

from dataclasses import dataclass
from typing import Any, ClassVar

from geopera.core.contracts.base import ContractError, _Versioned
from geopera.core.identity import BandIdentity
from geopera.core.normalisation import BandStats


@dataclass
class ShardSource:
    """One archive source's share of the chips, with its band statistics.

    Attributes:
        name: The source's name (as ``archive inspect`` shows it).
        chips: Chips drawn from it.
        stats: Its band statistics (``BandStats`` fields), from the written chips.
        crs: Its CRS (``EPSG:32633`` or WKT), which the chip bounds are in.
        res: Its pixel size in CRS units (x, y).
    """

    name: str
    chips: int
    stats: dict[str, list[float]]
    crs: str
    res: list[float]

    def band_stats(self) -> BandStats:
        """The statistics as the record every stage scales with."""
        return BandStats.from_dict(self.stats)


def _sources(rows: Any) -> list[ShardSource]:
    """The ``sources`` of ``shards.json`` as records; one line when a row is not one."""
    try:
        return [ShardSource(**row) for row in rows]
    except TypeError as err:
        raise ContractError(f"shards.json: a source is not valid ({err})") from err


@dataclass
class ShardSet(_Versioned):
    """A folder of chip shards: ``data/`` (LitData chunks), ``chips.parquet`` and this record.

    Attributes:
        count: Chips written.
        size: Chip size in pixels (square).
        dtype: The stored dtype of every chip (the archive's, unchanged).
        bands: Band names, in chip order.
        identities: What each band measures (``BandIdentity`` fields), None where unknown.
        sources: The sources the chips came from, in the data module's order.
        roi: The ROI: ``origin`` (what the user gave) and ``wkt_wgs84``.
        archive: The archive paths or URLs that were sampled.
        seed: The sampling seed.
        max_nodata: Largest nodata fraction a chip was allowed.
        library: The shard format (``litdata``) and its version.
        data: The folder of the shards, relative to ``shards.json``.
        compression: The shards' compression.
    """

    FORMAT: ClassVar[int] = 1
    KIND: ClassVar[str] = "shard set description"
    FILE: ClassVar[str] = "shards.json"

    count: int
    size: int
    dtype: str
    bands: list[str]
    identities: list[dict[str, Any] | None]
    sources: list[ShardSource]
    roi: dict[str, str]
    archive: list[str]
    seed: int
    max_nodata: float
    library: str
    data: str = "data"
    compression: str = "zstd"
    NESTED: ClassVar[dict[str, Any]] = {"sources": lambda rows: _sources(rows)}

    def band_identities(self) -> list[BandIdentity | None]:
        """The identities as records (None where a band is not known)."""
        return [BandIdentity.from_dict(i) if i else None for i in self.identities]
