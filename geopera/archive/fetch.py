"""``geopera data fetch``: a local, clipped COG copy of an archive, for offline pretraining.

Every item of the archive that overlaps the ROI is read in the ROI's bounding window (on the
item's own grid: no resampling) and written as a COG with its band names; a static STAC catalog
(``catalog.json``, with the ``proj``, ``eo`` and ``raster`` extensions) describes the copy, so
``--archive OUT/catalog.json`` (or simply ``--archive OUT``) reads it like the original. The copy
is built in a hidden sibling folder and renamed into place when complete.
"""

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import shapely
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from geopera.core.errors import ArchiveError, error_line
from geopera.core.names import NameBook, inside
from geopera.core.outputs import full_disk_errors, staged_folder, write_json
from geopera.data.roi import ROI, outside_error
from geopera.data.sources.discover import discover
from geopera.data.sources.model import RasterItem, Source, bounds_to_wgs84, crs_label
from geopera.data.sources.signing import is_forbidden, resign, unsigned_path

#: Rows read and written at a time (bounded memory for large windows).
STRIP_ROWS = 1024


def _window(item: RasterItem, roi_local: Any) -> Window | None:
    """The item's pixel window covering the ROI's bounds (outward-rounded, clipped), or None."""
    inside = roi_local & shapely.box(*item.bounds)
    if inside.is_empty or inside.area == 0:
        return None
    minx, miny, maxx, maxy = inside.bounds
    left, _, _, top = item.bounds
    rx, ry = item.res
    col0 = max(0, math.floor((minx - left) / rx))
    row0 = max(0, math.floor((top - maxy) / ry))
    col1 = min(item.width, math.ceil((maxx - left) / rx))
    row1 = min(item.height, math.ceil((top - miny) / ry))
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _copy(item: RasterItem, window: Window, dst: Path) -> dict[str, Any]:
    """Read the window of an item strip by strip into a GTiff, then make it a COG."""
    scratch = dst.with_suffix(".scratch.tif")
    with rasterio.open(item.paths[0]) as src:
        profile = {
            "driver": "GTiff",
            "width": int(window.width),
            "height": int(window.height),
            "count": src.count,
            "dtype": src.dtypes[0],
            "crs": src.crs,
            "transform": window_transform(window, src.transform),
            "nodata": src.nodata,
            "tiled": True,
            "blockxsize": 512,
            "blockysize": 512,
            "BIGTIFF": "IF_SAFER",
        }
        with rasterio.open(scratch, "w", **profile) as out:
            out.descriptions = tuple(item.band_names)
            for r in range(0, int(window.height), STRIP_ROWS):
                rows = min(STRIP_ROWS, int(window.height) - r)
                strip = Window(window.col_off, window.row_off + r, window.width, rows)
                data: np.ndarray = src.read(window=strip)  # (C, rows, W)
                out.write(data, window=Window(0, r, window.width, rows))
        transform = profile["transform"]
    rasterio.shutil.copy(scratch, dst, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")
    scratch.unlink()
    return {"transform": list(transform)[:6], "shape": [int(window.height), int(window.width)]}


def _stac_item(source: Source, item: RasterItem, file: str, grid: dict[str, Any]) -> dict[str, Any]:
    """A STAC item for one fetched COG (relative asset href, proj/eo/raster extensions)."""
    a, _, c, _, e, f = grid["transform"]
    rows, cols = grid["shape"]
    bounds = (c, f + e * rows, c + a * cols, f)
    wgs84 = bounds_to_wgs84(item.crs, bounds)
    common = {name: alias for alias, name in item.aliases.items()}
    proj: dict[str, Any] = {"proj:shape": grid["shape"], "proj:transform": grid["transform"]}
    epsg = item.crs.to_epsg()
    if epsg is not None:
        proj["proj:code"] = f"EPSG:{epsg}"
    else:
        proj["proj:wkt2"] = item.crs.to_wkt()
    box = wgs84 or (-180.0, -90.0, 180.0, 90.0)
    finite = item.nodata is not None and math.isfinite(item.nodata)
    nodata: dict[str, Any] = {"nodata": item.nodata} if finite else {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    # STAC needs a time: the acquisition's when known, else "unknown, before the fetch"
    when: dict[str, Any] = (
        {"datetime": item.acquired}
        if item.acquired
        else {"datetime": None, "start_datetime": "1970-01-01T00:00:00Z", "end_datetime": now}
    )
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        ],
        "id": item.scene,
        "collection": source.name,
        "geometry": shapely.geometry.mapping(shapely.box(*box)),
        "bbox": list(box),
        "properties": {**when, "platform": source.family, **proj},
        "assets": {
            "data": {
                "href": f"./{file}",
                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                "roles": ["data"],
                "eo:bands": [
                    {"name": b, **({"common_name": common[b]} if b in common else {})}
                    for b in item.band_names
                ],
                "raster:bands": [{"data_type": item.dtype, **nodata} for _ in item.band_names],
            }
        },
        "links": [
            {"rel": "root", "href": "../catalog.json"},
            {"rel": "parent", "href": "../catalog.json"},
        ],
    }


def fetch_archive(
    archive_paths: Sequence[str],
    roi: ROI,
    out: Path,
    sources: Sequence[str] | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict[str, Any]:
    """Copy the ROI part of an archive's items into ``out`` as COGs plus a static catalog.

    Args:
        archive_paths: Anything ``--archive`` takes (a recipe, a STAC catalog or search...).
        roi: The region to copy.
        out: New output folder.
        sources: Restrict to these source names.
        progress: Called with ``(done, total, scene)`` after each item.

    Returns:
        The manifest written to ``out/fetch.json``.

    Raises:
        ArchiveError: If no item overlaps the ROI, or every item failed.
        FileExistsError: If ``out`` exists and is not empty.
    """
    archive = discover(archive_paths, roi=roi)
    chosen = [archive.source(n) for n in sources] if sources else archive.sources
    jobs = _jobs(chosen, roi)
    problems = [{"path": p.path, "reason": p.reason} for p in archive.problems]
    fetched: list[dict[str, Any]] = []
    with staged_folder(out) as work, full_disk_errors(work):
        places = _Places(work)
        for n, (source, item, window) in enumerate(jobs):
            folder, stem = places.claim(source.name, item.scene)
            try:
                fetched.append(_fetch_item(source, item, window, folder, stem))
            except Exception as err:
                problems.append(
                    {"path": ", ".join(item.assets or item.paths), "reason": error_line(err)}
                )
                for leftover in (folder / f"{stem}.tif", folder / f"{stem}.json"):
                    leftover.unlink(missing_ok=True)
            if progress is not None:
                progress(n + 1, len(jobs), item.scene)
        if not fetched:
            raise ArchiveError(
                f"none of the {len(jobs)} items over the ROI could be read; first problem: "
                f"{problems[-1]['path']}: {problems[-1]['reason']}"
            )
        description = f"geopera data fetch of {' '.join(archive_paths)} over {roi.origin}"
        _write_catalog(work / "catalog.json", out.name, description, fetched)
        manifest = {
            "archive": list(archive_paths),
            "roi": {"origin": roi.origin, "wkt_wgs84": roi.wkt_wgs84},
            "items": fetched,
            "problems": problems,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        write_json(work / "fetch.json", manifest)
    return manifest


def _jobs(chosen: Sequence[Source], roi: ROI) -> list[tuple[Source, RasterItem, Window]]:
    """Every item that overlaps the ROI, with its window on the item's own grid."""
    jobs: list[tuple[Source, RasterItem, Window]] = []
    for source in chosen:
        try:
            local = roi.to_crs(source.crs)
        except Exception:
            continue
        for item in source.items:
            window = _window(item, local)
            if window is not None:
                jobs.append((source, item, window))
    if not jobs:
        raise outside_error(roi, [(s.name, s.bounds_wgs84) for s in chosen])
    return jobs


class _Places:
    """Where each fetched item goes: ``SOURCE/STEM.tif`` and ``.json``, both names made safe.

    Source names (a recipe's ``name``, a collection id) and scene names (an item's ``id``) come
    from documents: each becomes a safe, unique component (:class:`~geopera.core.names.NameBook`)
    and every path is checked to stay inside the copy before it is written.
    """

    def __init__(self, work: Path) -> None:
        self.work = work
        self.sources = NameBook(taken=("catalog.json", "fetch.json"))
        self.folders: dict[str, Path] = {}
        self.scenes: dict[str, NameBook] = {}

    def claim(self, source: str, scene: str) -> tuple[Path, str]:
        """The folder (created) and file stem of one item of ``source``."""
        if source not in self.folders:
            folder = inside(self.work, self.work / self.sources.claim(source), source)
            folder.mkdir()
            self.folders[source] = folder
            self.scenes[source] = NameBook()
        folder = self.folders[source]
        stem = self.scenes[source].claim(scene)
        inside(self.work, folder / f"{stem}.json", scene)
        return folder, stem


def _fetch_item(
    source: Source, item: RasterItem, window: Window, folder: Path, stem: str
) -> dict[str, Any]:
    """Copy one item's window as ``folder/stem.tif`` with its STAC item; the manifest's row.

    The row keeps the item's own id (``scene``) beside the file names it was given.
    """
    name = f"{stem}.tif"
    try:
        grid = _copy(item, window, folder / name)
    except Exception as err:
        if not is_forbidden(err) or not resign(item):
            raise
        grid = _copy(item, window, folder / name)  # the signature had expired: signed again, once
    stac = _stac_item(source, item, name, grid)
    (folder / f"{stem}.json").write_text(json.dumps(stac, indent=1))
    return {
        "source": source.name,
        "scene": item.scene,
        "file": f"{folder.name}/{name}",
        "item": f"{folder.name}/{stem}.json",
        "from": [unsigned_path(item, p) for p in item.assets] or item.paths,
        "bands": item.band_names,
        "crs": crs_label(item.crs),
        "window": [int(window.col_off), int(window.row_off), int(window.width), int(window.height)],
    }


def _write_catalog(path: Path, name: str, description: str, fetched: list[dict[str, Any]]) -> None:
    """A static STAC catalog that links every fetched item (pretrain with ``--archive`` on it)."""
    links = [{"rel": "item", "href": f"./{f['item']}", "type": "application/json"} for f in fetched]
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": name,
        "description": description,
        "links": [{"rel": "root", "href": "./catalog.json"}, *links],
    }
    path.write_text(json.dumps(catalog, indent=1))
