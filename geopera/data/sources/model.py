"""Archive model: raster items, sources, the archive and the problems found on the way.

A *source* is a set of rasters that share a signature (sensor family or naming pattern, band
names, dtype, resolution and CRS) and can therefore be sampled by one torchgeo ``RasterDataset``
at its own native grid. Nothing is resampled across sources: 0.5 m and 30 m data stay apart.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from shapely.geometry.base import BaseGeometry

from geopera.core.errors import ArchiveError, BandSelectionError
from geopera.core.identity import BandIdentity
from geopera.data.bands import resolve_bands
from geopera.data.identity import identify
from geopera.data.roi import ROI, outside_error
from geopera.data.sensors import sensor
from geopera.data.sources.trust import Signer

#: File extensions treated as rasters (case-insensitive).
RASTER_EXTENSIONS = frozenset({".tif", ".tiff", ".vrt", ".jp2"})

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Problem:
    """A file that was skipped, and why.

    Attributes:
        path: The file's path (GDAL virtual paths as given).
        reason: What is wrong and what to do about it.
    """

    path: str
    reason: str


@dataclass(frozen=True)
class FileMeta:
    """Metadata of one raster file, read without reading pixels."""

    path: str
    stem: str
    ext: str
    count: int
    dtype: str
    crs: CRS
    res: tuple[float, float]
    transform: tuple[float, ...]
    width: int
    height: int
    bounds: Bounds
    nodata: float | None
    descriptions: tuple[str | None, ...]
    #: Internal tile (block) size as (rows, cols), or None when not known.
    block: tuple[int, int] | None = None


@dataclass(frozen=True)
class Signing:
    """How a STAC item's asset URLs were signed (see :mod:`geopera.data.sources.signing`).

    Attributes:
        hook: The checked signing hook.
        unsigned: Per asset of the item, in ``RasterItem.assets`` order, its URL before signing.
    """

    hook: Signer
    unsigned: tuple[str, ...]


@dataclass
class RasterItem:
    """One scene: a stacked file, or band-separate files merged into one multi-band item.

    Attributes:
        scene: Scene identifier (file stem without band token).
        paths: One path for a stacked file; one per band, in ``band_names`` order, otherwise.
        band_names: Band names in file order.
        separate: True when each band lives in its own file.
        family: Sensor family (``"landsat8"``...) or the file name's leading token.
        dtype: Raw dtype of the pixels.
        crs: Native CRS.
        res: Native pixel size (x, y) in CRS units.
        bounds: Native bounds (left, bottom, right, top).
        width: Width in pixels.
        height: Height in pixels.
        nodata: Nodata value, or None.
        assets: For STAC items: the assets (GDAL paths, often remote) that ``paths[0]``, a local
            VRT, stacks; empty for files.
        aliases: Common band names (``red``, ``nir``...) -> band names, from STAC metadata.
        acquired: Acquisition time (ISO 8601) from STAC metadata, or None.
        band_sources: For STAC items: per band, the asset (GDAL path) and 1-based band index in
            it that holds the band (what the VRT stacks); empty for files.
        signing: For STAC items whose asset URLs were signed: how to sign them again when the
            signature expires; None otherwise.
    """

    scene: str
    paths: list[str]
    band_names: list[str]
    separate: bool
    family: str
    dtype: str
    crs: CRS
    res: tuple[float, float]
    bounds: Bounds
    width: int
    height: int
    nodata: float | None
    assets: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    acquired: str | None = None
    band_sources: list[tuple[str, int]] = field(default_factory=list)
    signing: Signing | None = None

    @property
    def signature(self) -> tuple[Any, ...]:
        """Key that decides which items can share a source."""
        return (
            self.family,
            tuple(self.band_names),
            self.dtype,
            self.crs.to_wkt(),
            round(self.res[0], 9),
            round(self.res[1], 9),
        )


@dataclass
class Source:
    """Rasters of one signature, sampled together by one torchgeo ``RasterDataset``.

    Attributes:
        name: Unique, readable name (e.g. ``"landsat8_30m"``).
        items: The scenes of this source.
    """

    name: str
    items: list[RasterItem] = field(default_factory=list)

    @property
    def first(self) -> RasterItem:
        """The first item, which carries the shared signature."""
        return self.items[0]

    @property
    def band_names(self) -> list[str]:
        """Band names in file order."""
        return self.first.band_names

    @property
    def family(self) -> str:
        """Sensor family or naming pattern."""
        return self.first.family

    def band_identities(self) -> list[BandIdentity | None]:
        """What each band measures (None where nothing says; :mod:`geopera.data.identity`)."""
        item = self.first
        return identify(item.band_names, item.family, Path(item.paths[0]).stem, item.aliases)

    @property
    def crs(self) -> CRS:
        """Native CRS."""
        return self.first.crs

    @property
    def res(self) -> tuple[float, float]:
        """Native pixel size (x, y)."""
        return self.first.res

    @property
    def dtype(self) -> str:
        """Raw pixel dtype."""
        return self.first.dtype

    @property
    def nodata(self) -> float | None:
        """Nodata value of the first item (None when unset)."""
        return self.first.nodata

    @property
    def files(self) -> list[str]:
        """All files of the source (local VRTs for STAC items)."""
        return [p for item in self.items for p in item.paths]

    @property
    def data_files(self) -> list[str]:
        """The files or STAC assets that hold the pixels (what a user would list)."""
        return [p for item in self.items for p in (item.assets or item.paths)]

    @cached_property
    def footprint(self) -> BaseGeometry:
        """Union of the items' bounding boxes, in the source CRS."""
        return shapely.union_all([shapely.box(*item.bounds) for item in self.items])

    @property
    def bounds_wgs84(self) -> Bounds | None:
        """Bounds in lon/lat, or None when the CRS cannot be transformed (e.g. full-disk)."""
        return bounds_to_wgs84(self.crs, self.footprint.bounds)

    def resolve_bands(self, requested: Sequence[str] | str | None) -> list[str]:
        """Resolve a band request (names, 1-based indices or a preset) for this source.

        Args:
            requested: See :func:`geopera.data.bands.resolve_bands`.

        Returns:
            Band names, in the requested order.
        """
        family = self.family if sensor(self.family) is not None else None
        return resolve_bands(requested, self.band_names, family, self.name, self.first.aliases)

    def intersects(self, roi: "ROI") -> bool:
        """Whether the ROI overlaps the source's footprint (with a non-zero area).

        Args:
            roi: The region of interest.

        Returns:
            False also when the ROI cannot be transformed into the source CRS.
        """
        try:
            local = roi.to_crs(self.crs)
        except Exception:
            return False
        return bool((local & self.footprint).area > 0)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary of the source."""
        b = self.bounds_wgs84
        return {
            "name": self.name,
            "files": self.data_files,
            "crs": crs_label(self.crs),
            "res": list(self.res),
            "bands": self.band_names,
            "dtype": self.dtype,
            "nodata": self.nodata,
            "bounds_wgs84": list(b) if b is not None else None,
        }


def naming_family(family: str) -> str | None:
    """``family`` when it is a sensor with a band naming of its own, else None.

    Args:
        family: A raster item's family (a sensor's family, or a file-name token).

    Returns:
        The family for band layouts, or None for generic imagery (NAIP's ``1..4``).
    """
    known = sensor(family)
    return known.family if known is not None and known.names_bands else None


@dataclass
class Archive:
    """The usable sources of an archive and the problems met while discovering it.

    Attributes:
        sources: Usable sources, sorted by name.
        problems: Skipped files and their reasons.
    """

    sources: list[Source]
    problems: list[Problem]

    def source(self, name: str) -> Source:
        """Look a source up by name.

        Args:
            name: Source name.

        Returns:
            The source.

        Raises:
            ArchiveError: If no source has that name.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise ArchiveError(
            f"no source named {name!r}; sources are: {', '.join(s.name for s in self.sources)}"
        )

    def select(
        self,
        bands: Sequence[str] | str | None,
        sources: Sequence[str] | None = None,
        roi: "ROI | None" = None,
    ) -> list[tuple[Source, list[str]]]:
        """Choose the sources and bands to train on.

        Every chosen source must yield the same number of bands. With no band request, all
        sources must agree on their band count; otherwise the error lists each source's bands.
        Sources that cannot satisfy a request (e.g. a DEM for ``rgb``) are left out.

        Args:
            bands: Band names, 1-based indices or a preset; None for all bands.
            sources: Source names to restrict to; None for all.
            roi: When given, sources outside it take no part (unless none intersects it, which
                is left for the sampler to report with both extents).

        Returns:
            ``(source, band_names)`` pairs.

        Raises:
            BandSelectionError: If no source satisfies the request, or sources disagree.
        """
        candidates = [self.source(n) for n in sources] if sources else list(self.sources)
        if roi is not None:
            candidates = [s for s in candidates if s.intersects(roi)]
            if not candidates:
                pool = [self.source(n) for n in sources] if sources else self.sources
                raise outside_error(roi, [(s.name, s.bounds_wgs84) for s in pool])
        listing = "; ".join(f"{s.name}: {', '.join(s.band_names)}" for s in candidates)
        if bands is None:
            counts = {len(s.band_names) for s in candidates}
            if len(counts) > 1:
                raise BandSelectionError(
                    "sources disagree on bands and no band choice was given. Sources and "
                    f"bands: {listing}. Choose with --bands (names, indices or 'rgb') and/or "
                    "--sources."
                )
            return [(s, list(s.band_names)) for s in candidates]
        chosen: list[tuple[Source, list[str]]] = []
        for src in candidates:
            try:
                chosen.append((src, src.resolve_bands(bands)))
            except BandSelectionError:
                continue  # e.g. a DEM for "rgb": left out
        if not chosen:
            shown = bands if isinstance(bands, str) else list(bands)
            raise BandSelectionError(
                f"no source has the requested bands {shown!r}. Sources and bands: {listing}"
            )
        counts = {len(b) for _, b in chosen}
        if len(counts) > 1:
            raise BandSelectionError(
                f"the requested bands give different band counts per source: {listing}"
            )
        return chosen


def crs_label(crs: CRS) -> str:
    """Short label of a CRS: ``EPSG:xxxx`` when it has a code, else its WKT.

    Args:
        crs: A rasterio CRS.

    Returns:
        A string.
    """
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()


def bounds_to_wgs84(crs: CRS, bounds: Bounds) -> Bounds | None:
    """Transform bounds to lon/lat, densifying the edges.

    Args:
        crs: CRS of the bounds.
        bounds: (left, bottom, right, top).

    Returns:
        Lon/lat bounds, or None when the transform gives non-finite values.
    """
    try:
        out = transform_bounds(crs, "EPSG:4326", *bounds, densify_pts=21)
    except Exception:  # pragma: no cover - PROJ failure on exotic CRSs
        return None
    if not all(math.isfinite(v) for v in out):
        return None
    return (float(out[0]), float(out[1]), float(out[2]), float(out[3]))
