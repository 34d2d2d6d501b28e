"""Local and GDAL-path rasters: find them, read their headers, group band files, name sources.

Files that cannot be used (unreadable, truncated, no CRS, empty, duplicates) are reported as
:class:`~geopera.data.sources.model.Problem` rows and never stop discovery.
"""

import os
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import rasterio
import rasterio.errors
from rasterio.crs import CRS
from rasterio.windows import Window

from geopera.data.bands import BAND_FILE_RE, default_band_names, sort_band_names
from geopera.data.sensors import stem_family
from geopera.data.sources.model import (
    RASTER_EXTENSIONS,
    FileMeta,
    Problem,
    RasterItem,
    Source,
    crs_label,
    naming_family,
)


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
                block=(int(src.block_shapes[0][0]), int(src.block_shapes[0][1])),
            )
    except rasterio.errors.RasterioIOError as err:
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Problem(path, f"unreadable or corrupt raster ({msg}); skipped")
    except Exception as err:
        return Problem(path, f"unreadable raster ({type(err).__name__}: {err}); skipped")


def _family(stem: str) -> str:
    family = stem_family(stem)
    if family is not None:
        return family
    token = re.split(r"[_\-.\s]+", stem)[0].lower()
    return token or "raster"


def item_from_file(meta: FileMeta, band_names: list[str] | None = None) -> RasterItem:
    """The raster item of one stacked file (band names from ``band_names`` or the file)."""
    family = _family(meta.stem)
    names = band_names or default_band_names(
        naming_family(family), meta.count, meta.descriptions, meta.stem
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


def group_band_files(metas: list[FileMeta]) -> tuple[list[RasterItem], list[FileMeta]]:
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
            items.extend(item_from_file(m, [b]) for b, m in members)
            continue
        by_band = {b: m for b, m in members}
        names = sort_band_names(list(by_band))
        item = item_from_file(first, names)
        item.scene = scene + tail
        item.paths = [by_band[b].path for b in names]
        item.separate = len(names) > 1
        items.append(item)
    return items, rest


def dedup_items(items: list[RasterItem]) -> tuple[list[RasterItem], list[Problem]]:
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


def name_sources(groups: list[list[RasterItem]]) -> list[Source]:
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
