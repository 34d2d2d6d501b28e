"""Archive discovery: find rasters, read their metadata, group them into sources.

A *source* is a set of rasters that share a signature (sensor family or naming pattern, band
names, dtype, resolution and CRS) and can therefore be sampled by one torchgeo ``RasterDataset``
at its own native grid. Nothing is resampled across sources: 0.5 m and 30 m data stay apart.

Files that cannot be used (unreadable, truncated, no CRS, empty, duplicates) are reported as
:class:`Problem` rows and never stop discovery.
"""

import math
import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rasterio
import rasterio.errors
import shapely
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geopera.core.errors import ArchiveError, BandSelectionError
from geopera.data.bands import (
    BAND_FILE_RE,
    RGB_PRESETS,
    default_band_names,
    resolve_bands,
    sensor_family,
    sort_band_names,
)

if TYPE_CHECKING:
    from geopera.data.roi import ROI

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
        family = self.family if self.family in _FAMILIES else None
        aliases = self.first.aliases
        if aliases and requested is not None:
            names = [requested] if isinstance(requested, str) else list(requested)
            if [n.lower() for n in names] == ["rgb"] and {"red", "green", "blue"} <= set(aliases):
                preset = RGB_PRESETS.get(self.family, [])
                if not set(preset) <= set(self.band_names):
                    return [aliases["red"], aliases["green"], aliases["blue"]]
            requested = [aliases.get(n, n) for n in names]
        return resolve_bands(requested, self.band_names, family, self.name)

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


_FAMILIES = {"landsat8", "landsat7", "landsat5", "sentinel2", "sentinel1"}


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
                from geopera.data.roi import outside_error

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


def _zip_members(zip_path: str) -> list[str]:
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if Path(n).suffix.lower() in RASTER_EXTENSIONS]
    return [f"/vsizip/{zip_path}/{n}" for n in sorted(names)]


def find_rasters(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[Problem]]:
    """List raster files under the given paths.

    Directories are searched recursively (hidden folders skipped); non-raster files are ignored.
    GDAL virtual paths (``/vsizip/``, ``/vsicurl/``, ``/vsis3/``...) are accepted as files;
    ``/vsizip/archive.zip`` or a plain ``.zip`` path lists the rasters inside the zip.

    Args:
        paths: Folders, files or GDAL virtual paths.

    Returns:
        The raster paths (sorted, no duplicates) and problems for named paths that are not rasters.

    Raises:
        FileNotFoundError: If a local path does not exist.
    """
    found: list[str] = []
    problems: list[Problem] = []
    for raw in paths:
        p = str(raw)
        if p.startswith("/vsizip/") and p.lower().endswith(".zip"):
            local = p[len("/vsizip/") :]
            if not os.path.isfile(local):
                raise FileNotFoundError(f"zip archive {local} does not exist")
            found.extend(_zip_members(local))
        elif p.startswith("/vsi"):
            found.append(p)
        elif not os.path.exists(p):
            raise FileNotFoundError(
                f"archive path {p} does not exist; give folders or files of rasters "
                "(GeoTIFF, COG, VRT, JP2) or GDAL virtual paths such as /vsizip/..."
            )
        elif os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if Path(name).suffix.lower() in RASTER_EXTENSIONS:
                        found.append(os.path.join(dirpath, name))
        elif p.lower().endswith(".zip"):
            found.extend(_zip_members(os.path.abspath(p)))
        elif Path(p).suffix.lower() in RASTER_EXTENSIONS:
            found.append(p)
        else:
            problems.append(
                Problem(p, "not a raster file (expected .tif, .tiff, .vrt or .jp2); skipped")
            )
    return sorted(dict.fromkeys(found)), problems


def read_meta(path: str) -> FileMeta | Problem:
    """Read one file's metadata and check that its last block is readable.

    Args:
        path: A file path or GDAL path.

    Returns:
        The metadata, or the problem that makes the file unusable.
    """
    if not path.startswith("/vsi") and os.path.getsize(path) == 0:
        return Problem(path, "empty file (0 bytes); skipped")
    try:
        with rasterio.open(path) as src:
            if src.count == 0 or src.width == 0 or src.height == 0:
                return Problem(path, "empty raster (no bands or no pixels); skipped")
            if src.crs is None:
                return Problem(
                    path,
                    "no CRS: the file is not georeferenced; assign one (e.g. gdal_edit.py "
                    "-a_srs EPSG:xxxx) to include it; skipped",
                )
            if src.transform.is_identity:
                return Problem(path, "no geotransform (pixel grid only); skipped")
            # A truncated file often opens fine; reading its last pixel touches the last block.
            src.read(1, window=Window(src.width - 1, src.height - 1, 1, 1))
            stem = Path(path).stem
            return FileMeta(
                path=path,
                stem=stem,
                ext=Path(path).suffix.lower(),
                count=src.count,
                dtype=src.dtypes[0],
                crs=src.crs,
                res=(float(src.res[0]), float(src.res[1])),
                transform=tuple(src.transform)[:6],
                width=src.width,
                height=src.height,
                bounds=(src.bounds.left, src.bounds.bottom, src.bounds.right, src.bounds.top),
                nodata=src.nodata,
                descriptions=tuple(src.descriptions),
            )
    except rasterio.errors.RasterioIOError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Problem(path, f"unreadable or corrupt raster ({msg}); skipped")
    except Exception as err:
        return Problem(path, f"unreadable raster ({type(err).__name__}: {err}); skipped")


def _family(stem: str) -> str:
    family = sensor_family(stem)
    if family is not None:
        return family
    token = re.split(r"[_\-.\s]+", stem)[0].lower()
    return token or "raster"


def _item_from_file(meta: FileMeta, band_names: list[str] | None = None) -> RasterItem:
    family = _family(meta.stem)
    names = band_names or default_band_names(
        family if family in _FAMILIES else None, meta.count, meta.descriptions, meta.stem
    )
    return RasterItem(
        scene=meta.stem,
        paths=[meta.path],
        band_names=names,
        separate=False,
        family=family,
        dtype=meta.dtype,
        crs=meta.crs,
        res=meta.res,
        bounds=meta.bounds,
        width=meta.width,
        height=meta.height,
        nodata=meta.nodata,
    )


def _group_band_files(metas: list[FileMeta]) -> tuple[list[RasterItem], list[FileMeta]]:
    """Merge single-band files of one scene (``*_B2.TIF``, ``*_VV.tif``) into items."""
    groups: dict[tuple[str, str, str, str], list[tuple[str, FileMeta]]] = defaultdict(list)
    rest: list[FileMeta] = []
    for meta in metas:
        match = BAND_FILE_RE.match(meta.stem) if meta.count == 1 else None
        if match is None:
            rest.append(meta)
            continue
        key = (
            os.path.dirname(meta.path),
            match.group("scene"),
            (match.group("tail") or "").lower(),
            meta.ext,
        )
        groups[key].append((match.group("band"), meta))
    items: list[RasterItem] = []
    for (_, scene, tail, _), members in sorted(groups.items()):
        first = members[0][1]
        same_grid = all(
            m.transform == first.transform
            and (m.width, m.height) == (first.width, first.height)
            and m.dtype == first.dtype
            and m.crs == first.crs
            for _, m in members
        )
        if not same_grid:
            # Band files on different grids: keep them as separate single-band items.
            items.extend(_item_from_file(m, [b]) for b, m in members)
            continue
        by_band = {b: m for b, m in members}
        names = sort_band_names(list(by_band))
        item = _item_from_file(first, names)
        item.scene = scene + tail
        item.paths = [by_band[b].path for b in names]
        item.separate = len(names) > 1
        items.append(item)
    return items, rest


def _dedup(items: list[RasterItem]) -> tuple[list[RasterItem], list[Problem]]:
    """Drop stacked files that repeat a band-separate scene (same scene id and grid)."""
    separate = {
        (it.scene, it.bounds, it.res, len(it.band_names)): it for it in items if it.separate
    }
    kept: list[RasterItem] = []
    problems: list[Problem] = []
    for it in items:
        twin = separate.get((it.scene, it.bounds, it.res, len(it.band_names)))
        if not it.separate and twin is not None:
            names = ", ".join(os.path.basename(p) for p in twin.paths)
            problems.append(
                Problem(it.paths[0], f"duplicate of the band-separate files {names}; skipped")
            )
        else:
            kept.append(it)
    return kept, problems


def _fmt_res(res: tuple[float, float], crs: CRS) -> str:
    value = res[0]
    if crs.is_geographic:
        return f"{value:.2g}deg".replace(".", "p")
    text = str(round(value)) if value >= 10 else f"{value:.2g}"
    return text.replace(".", "p") + "m"


def _name_sources(groups: list[list[RasterItem]]) -> list[Source]:
    """Name sources ``family_res`` and disambiguate collisions with band count and dtype."""
    proposals: list[list[str]] = []
    for items in groups:
        it = items[0]
        proposals.append(
            [
                f"{it.family}_{_fmt_res(it.res, it.crs)}",
                f"{len(it.band_names)}b",
                it.dtype,
                crs_label(it.crs).replace("EPSG:", "epsg") if it.crs.to_epsg() else "custom",
            ]
        )
    names = [p[0] for p in proposals]
    clashes: dict[str, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        clashes[n].append(i)
    for base, idx in clashes.items():
        if len(idx) == 1:
            continue
        for level in range(1, 4):  # first qualifier that tells the clashing sources apart
            if len({proposals[i][level] for i in idx}) == len(idx):
                for i in idx:
                    names[i] = f"{base}_{proposals[i][level]}"
                break
        else:
            for k, i in enumerate(idx):
                names[i] = f"{base}_{k + 1}"
    final = names
    return [Source(name=n, items=items) for n, items in zip(final, groups, strict=True)]


def _expand(
    paths: Sequence[str], roi: "ROI | None"
) -> tuple[list[str], list[RasterItem], list[Problem]]:
    """Split archive arguments into raster paths and STAC items (recipes, catalogs, searches)."""
    from geopera.data.recipes import is_recipe, load_recipe
    from geopera.data.remote import gdal_path
    from geopera.data.stac import is_stac, load_stac, parse_search_url

    rasters: list[str] = []
    items: list[RasterItem] = []
    problems: list[Problem] = []
    for p in paths:
        spec = None
        if is_recipe(p):
            recipe = load_recipe(p)
            rasters.extend(recipe.paths)
            spec = recipe.stac
        elif p.lower().startswith(("stac+http://", "stac+https://")):
            spec = parse_search_url(p)
        elif is_stac(p):
            from geopera.data.stac import StacSpec

            spec = StacSpec(href=p)
        else:
            rasters.append(gdal_path(p) if "://" in p else p)
        if spec is not None:
            found, bad = load_stac(spec, roi)
            items.extend(found)
            problems.extend(bad)
    return rasters, items, problems


def discover(paths: Iterable[str | os.PathLike[str]], roi: "ROI | None" = None) -> Archive:
    """Discover the sources of a raster archive.

    Args:
        paths: Folders, files, GDAL virtual paths or URLs of rasters; STAC catalogs,
            collections, items or ItemCollections (``.json``/``.geojson``, path or URL); STAC
            API searches (``stac+https://...``); recipe files (``.yaml``).
        roi: Optional ROI: a STAC search's ``intersects``; static catalogs' items outside it
            are left out.

    Returns:
        The archive's sources and problems.

    Raises:
        FileNotFoundError: If a local path does not exist.
        ArchiveError: If no path was given, or a STAC document cannot be used.
    """
    from geopera.data.remote import configure_remote

    names = [str(p) for p in paths]
    if not names:
        raise ArchiveError("no archive path given; name one or more folders or raster files")
    rasters, stac_items, problems = _expand(names, roi)
    files, found = find_rasters(rasters) if rasters else ([], [])
    problems.extend(found)
    configure_remote(files + [a for it in stac_items for a in it.assets])
    metas: list[FileMeta] = []
    for f in files:
        meta = read_meta(f)
        if isinstance(meta, Problem):
            problems.append(meta)
        else:
            metas.append(meta)
    band_items, stacked = _group_band_files(metas)
    items = band_items + [_item_from_file(m) for m in stacked]
    items, dup_problems = _dedup(items)
    problems.extend(dup_problems)
    items.extend(stac_items)
    by_sig: dict[tuple[Any, ...], list[RasterItem]] = defaultdict(list)
    # a stable order: files by path, STAC items by id (their VRT's path hashes the asset URLs,
    # which change with the host or a signature)
    for it in sorted(items, key=lambda i: i.scene if i.assets else i.paths[0]):
        by_sig[it.signature].append(it)
    sources = sorted(_name_sources(list(by_sig.values())), key=lambda s: s.name)
    return Archive(sources=sources, problems=sorted(problems, key=lambda p: p.path))
