"""STAC items to raster items: one item per pixel grid, grouped like files.

Every STAC item becomes one :class:`~geopera.data.sources.model.RasterItem` per pixel grid:
its raster assets on the same grid (CRS, transform, size, dtype) are stacked, in asset order,
into a small local VRT (:mod:`~geopera.data.sources.stac_assets`) that points at the assets
where they live (``/vsicurl/``, ``/vsis3/``...). From then on an item is sampled like a local
stacked file; items are grouped into sources by the same signature as files (sensor family,
band names, dtype, CRS, resolution). Assets that fail are
:class:`~geopera.data.sources.model.Problem` rows; the rest of the item, and every other item,
is kept.
"""

import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import shapely

from geopera.core.errors import ArchiveError, error_line
from geopera.data.sensors import from_stac
from geopera.data.sources.files import read_meta
from geopera.data.sources.index import HeaderIndex
from geopera.data.sources.model import FileMeta, Problem, RasterItem, Signing
from geopera.data.sources.remote import gdal_path, load_hook
from geopera.data.sources.stac_assets import (
    Asset,
    asset_bands,
    asset_of,
    asset_stamp,
    band_selection,
    is_raster,
    vrt_xml,
    write_vrt,
)
from geopera.data.sources.stac_search import StacSpec, search_items, static_items
from geopera.data.sources.trust import Signer, check_asset

if TYPE_CHECKING:
    import pystac

    from geopera.data.roi import ROI


def _family(item: "pystac.Item") -> str:
    props = item.properties
    texts = (props.get("platform"), props.get("constellation"), item.collection_id, item.id)
    found = from_stac(str(t) for t in texts if t)
    if found is not None:
        return found.family
    token = re.split(r"[^A-Za-z0-9]+", item.collection_id or "stac")[0].lower()
    return token or "stac"


def raster_items(
    item: "pystac.Item",
    keep: Sequence[str] | None = None,
    sign: Signer | None = None,
    headers: HeaderIndex | None = None,
) -> tuple[list[RasterItem], list[Problem]]:
    """The raster items of one STAC item: one per pixel grid of its kept raster assets.

    Args:
        item: The STAC item.
        keep: Bands to keep (asset keys, band names or common names); None for all.
        sign: Signs an asset URL before it is read.
        headers: The archive index of the document: headers read from files are kept there.

    Returns:
        Raster items (VRT paths, asset paths in ``assets``) and problems (per asset).
    """
    by_grid, problems, unsigned = _assets_by_grid(item, keep, sign, headers)
    family = _family(item)
    out = [
        _grid_item(item, assets, family, item.id if len(by_grid) == 1 else None)
        for assets in by_grid.values()
    ]
    if sign is not None:  # how to sign again when the signature expires
        for one in out:
            one.signing = Signing(sign, tuple(unsigned[path] for path in one.assets))
    return out, problems


def _assets_by_grid(
    item: "pystac.Item",
    keep: Sequence[str] | None,
    sign: Signer | None,
    headers: HeaderIndex | None,
) -> tuple[dict[tuple[Any, ...], list[Asset]], list[Problem], dict[str, str]]:
    """The kept raster assets of an item, grouped by pixel grid; a problem row per bad asset.

    Returns:
        The assets by grid, the problems, and each asset's URL before signing (by GDAL path).
    """
    problems: list[Problem] = []
    unsigned: dict[str, str] = {}
    by_grid: dict[tuple[Any, ...], list[Asset]] = defaultdict(list)
    base = item.get_self_href()
    as_dicts = {key: a.to_dict() for key, a in item.assets.items()}
    rasters = {key: d for key, d in as_dicts.items() if is_raster(d)}
    for key, indexes in band_selection(rasters, keep).items():
        asset = rasters[key]
        bands = asset_bands(key, asset)
        href = item.assets[key].get_absolute_href() or asset["href"]
        if base and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^/", href):
            href = urljoin(base, href)
        try:
            check_asset(href, base)
            signed = sign(href) if sign is not None else href
            read = _header_reader(headers, href, asset)
            found = asset_of(item, key, asset, signed, indexes, [bands[i] for i in indexes], read)
        except Exception as err:
            reason = error_line(err)[:300]
            found = Problem(href, f"asset {key!r} of item {item.id}: {reason}; skipped")
        if isinstance(found, Problem):  # named by the URL before signing: no secret in reports
            problems.append(Problem(gdal_path(href), found.reason))
            continue
        sx, rot_x, _, rot_y, sy, _ = found.transform
        if rot_x != 0 or rot_y != 0 or sx <= 0 or sy >= 0:
            reason = "rotated or flipped grid (not north-up); skipped"
            problems.append(Problem(gdal_path(href), f"asset {key!r} of item {item.id}: {reason}"))
            continue
        by_grid[found.grid].append(found)
        unsigned[found.path] = href
    return by_grid, problems, unsigned


def _header_reader(
    headers: HeaderIndex | None, href: str, asset: dict[str, Any]
) -> Callable[[str], FileMeta | Problem]:
    """How to read an asset's header: through the index (keyed by the unsigned URL), or not."""
    if headers is None:
        return read_meta
    stamp = asset_stamp(asset)
    return lambda path: headers.header(href, stamp, path)


def _grid_item(
    item: "pystac.Item", assets: list[Asset], family: str, scene: str | None
) -> RasterItem:
    """One raster item from an item's assets on one grid (a local VRT stacks them).

    Args:
        item: The STAC item.
        assets: Its assets on this grid, in asset order.
        family: The item's sensor family.
        scene: The scene name, or None for ``<item id>_<resolution>m`` (several grids).

    Returns:
        The raster item.
    """
    first = assets[0]
    a, _, c, _, e, f = first.transform
    names = [b.name for part in assets for b in part.bands]
    if len(set(names)) < len(names):  # e.g. two assets both called "1": prefix the key
        for part in assets:
            for b in part.bands:
                b.name = f"{part.key}_{b.name}"
        names = [b.name for part in assets for b in part.bands]
    scene = scene or f"{item.id}_{a:g}m"
    return RasterItem(
        scene=scene,
        paths=[write_vrt(vrt_xml(assets), scene)],
        band_names=names,
        separate=False,
        family=family,
        dtype=first.dtype,
        crs=first.crs,
        res=(abs(a), abs(e)),
        bounds=(c, f + e * first.height, c + a * first.width, f),
        width=first.width,
        height=first.height,
        nodata=first.bands[0].nodata,
        assets=[part.path for part in assets],
        acquired=_acquired(item),
        band_sources=[(part.path, i + 1) for part in assets for i in part.indexes],
        aliases={b.common: b.name for part in assets for b in part.bands if b.common},
    )


def _acquired(item: "pystac.Item") -> str | None:
    props = item.properties
    value = props.get("datetime") or props.get("start_datetime")
    return str(value) if value else None


def _overlaps(item: "pystac.Item", roi_wgs84: Any) -> bool:
    if roi_wgs84 is None or not item.bbox:
        return True
    bb = [float(v) for v in item.bbox]
    west, south, east, north = (bb[0], bb[1], bb[3], bb[4]) if len(bb) == 6 else bb[:4]
    if not all(math.isfinite(v) for v in (west, south, east, north)):
        return True
    if east < west:  # crosses the antimeridian
        return bool(
            roi_wgs84.intersects(shapely.box(west, south, 180, north))
            or roi_wgs84.intersects(shapely.box(-180, south, east, north))
        )
    return bool(roi_wgs84.intersects(shapely.box(west, south, east, north)))


def load_stac(
    spec: StacSpec, roi: "ROI | None" = None, reindex: bool = False
) -> tuple[list[RasterItem], list[Problem]]:
    """Read a STAC archive into raster items.

    Args:
        spec: What to read.
        roi: Static catalogs: items whose bbox misses the ROI are left out. API searches: the
            search's ``intersects`` (required).
        reindex: Read again the asset headers the archive index keeps for this document.

    Returns:
        Raster items and problems.

    Raises:
        ArchiveError: If the document is not STAC, cannot be read, a search finds nothing, or
            no item has the requested bands.
        FileNotFoundError: If a local document does not exist.
    """
    sign = load_hook(spec.sign) if spec.sign else None
    problems: list[Problem] = []
    if spec.search is not None:
        items: Iterable[pystac.Item] = search_items(spec.search, roi)
        where = spec.search.describe()
    elif spec.href is not None:
        items = static_items(spec.href, problems)
        where = spec.href if "://" in spec.href else os.path.abspath(spec.href)
    else:  # pragma: no cover - StacSpec is built by the parsers above
        raise ValueError("a StacSpec needs href or search")
    headers = HeaderIndex(f"stac:{where}", reindex)
    roi_wgs84 = shapely.from_wkt(roi.wkt_wgs84) if roi is not None else None
    found: list[RasterItem] = []
    seen = 0
    for item in items:
        if not _overlaps(item, roi_wgs84):
            continue
        seen += 1
        try:
            got, bad = raster_items(item, spec.assets, sign, headers)
        except Exception as err:  # a malformed item is a problem row; the others are read
            reason = f"item {item.id} is not usable ({error_line(err)[:300]}); skipped"
            problems.append(Problem(item.get_self_href() or item.id, reason))
            continue
        found.extend(got)
        problems.extend(bad)
        if not got and not bad:
            keys = ", ".join(item.assets) or "none"
            wanted = f"the bands {', '.join(spec.assets)}" if spec.assets else "raster assets"
            reason = f"item {item.id} has no {wanted} (assets: {keys}); skipped"
            problems.append(Problem(item.get_self_href() or item.id, reason))
    if seen and not found and spec.assets:
        raise ArchiveError(
            f"no asset of the {seen} STAC items at {where} has the bands "
            f"{', '.join(spec.assets)}; name asset keys, band names or common names "
            f"(problems: {'; '.join(p.reason for p in problems[:3])})"
        )
    headers.save()
    return found, problems
