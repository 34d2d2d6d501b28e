"""STAC archives: static catalogs, collections, ItemCollections and STAC API searches.

Every STAC item becomes one :class:`~geopera.data.archive.RasterItem` per pixel grid: its raster
assets on the same grid (CRS, transform, size, dtype) are stacked, in asset order, into a small
local VRT that points at the assets where they live (``/vsicurl/``, ``/vsis3/``...). From then on
an item is sampled like a local stacked file; items are grouped into sources by the same
signature as files (sensor family, band names, dtype, CRS, resolution).

Metadata comes from the ``proj`` (grid), ``raster`` (dtype, nodata) and ``eo`` (band names,
common names) extensions when an asset has them, so listing an archive opens no file; an asset
without them is opened once (its header only). Assets that fail are :class:`Problem` rows; the
rest of the item, and every other item, is kept.
"""

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit
from xml.sax.saxutils import escape

import shapely
from rasterio.crs import CRS

from geopera.core.cache import cache_dir
from geopera.core.errors import ArchiveError, error_line
from geopera.core.outputs import write_atomic
from geopera.data.archive import RASTER_EXTENSIONS, Problem, RasterItem, read_meta
from geopera.data.remote import configure_remote, gdal_path, load_hook

if TYPE_CHECKING:
    import pystac

    from geopera.data.roi import ROI

#: Asset roles that never hold the pixels to train on.
SKIPPED_ROLES = frozenset({"thumbnail", "overview", "metadata", "visual", "cloud", "snow-ice"})

#: STAC ``data_type`` -> GDAL data type name (for the VRT).
_GDAL_TYPES = {
    "int8": "Int8",
    "uint8": "Byte",
    "int16": "Int16",
    "uint16": "UInt16",
    "int32": "Int32",
    "uint32": "UInt32",
    "int64": "Int64",
    "uint64": "UInt64",
    "float32": "Float32",
    "float64": "Float64",
}

#: Platform / constellation / collection patterns -> geopera sensor families.
_FAMILY_PATTERNS = [
    (re.compile(r"sentinel-?2", re.I), "sentinel2"),
    (re.compile(r"sentinel-?1", re.I), "sentinel1"),
    (re.compile(r"landsat-?[89]|landsat-c2", re.I), "landsat8"),
    (re.compile(r"landsat-?7", re.I), "landsat7"),
    (re.compile(r"landsat-?[45]", re.I), "landsat5"),
    (re.compile(r"naip", re.I), "naip"),
]

#: Default cap on the items a STAC API search returns.
DEFAULT_MAX_ITEMS = 200


@dataclass(frozen=True)
class StacSearch:
    """A STAC API item search (the ROI is added as ``intersects``).

    Attributes:
        api: Root URL of the API (``https://...``; a trailing ``/search`` is dropped).
        collections: Collection ids.
        datetime: ``A/B`` interval or one date, or None.
        query: Query-extension filters such as ``eo:cloud_cover<20``.
        max_items: Most items to take (pages are followed until then).
        limit: Page size asked of the server.
    """

    api: str
    collections: tuple[str, ...] = ()
    datetime: str | None = None
    query: tuple[str, ...] = ()
    max_items: int = DEFAULT_MAX_ITEMS
    limit: int = 100

    def describe(self) -> str:
        """One line naming the search, for messages."""
        parts = [f"collections={','.join(self.collections) or 'any'}"]
        if self.datetime:
            parts.append(f"datetime={self.datetime}")
        parts.extend(self.query)
        return f"{self.api} ({', '.join(parts)})"


@dataclass(frozen=True)
class StacSpec:
    """What to read: a static STAC document (``href``) or an API search, and which assets.

    Attributes:
        href: Path or URL of a catalog, collection, item or ItemCollection.
        search: A STAC API search instead of ``href``.
        assets: Keep only these bands (asset keys, band names or common names); None for all.
        sign: ``module:function`` that signs asset URLs, or None.
    """

    href: str | None = None
    search: StacSearch | None = None
    assets: tuple[str, ...] | None = None
    sign: str | None = None


def is_stac(path: str) -> bool:
    """Whether an ``--archive`` argument names STAC rather than rasters.

    Args:
        path: The argument.

    Returns:
        True for ``stac+http(s)://`` searches, ``.json``/``.geojson`` documents and
        ``http(s)://`` URLs that do not end with a raster extension.
    """
    lower = path.lower()
    if lower.startswith(("stac+http://", "stac+https://")):
        return True
    tail = lower.split("?", 1)[0]
    if tail.endswith((".json", ".geojson")):
        return True
    if lower.startswith(("http://", "https://")):
        return os.path.splitext(tail)[1] not in RASTER_EXTENSIONS
    return False


def parse_search_url(url: str) -> StacSpec:
    """Parse ``stac+https://HOST/PATH?collections=C&datetime=A/B&...`` into a search.

    Query keys: ``collections`` (comma-separated), ``datetime``, ``max_items``, ``limit``,
    ``assets`` (comma-separated bands to keep), ``sign`` (``module:function``); any other
    ``key=value`` pair, or a ``query=`` value, is a query-extension filter: ``eo:cloud_cover<20``
    is written ``query=eo:cloud_cover<20``.

    Args:
        url: The URL.

    Returns:
        The spec.

    Raises:
        ValueError: If a number is malformed or the URL has no host.
    """
    raw = url[len("stac+") :]
    parts = urlsplit(raw)
    if not parts.netloc:
        raise ValueError(f"STAC search URL {url!r} has no host; e.g. stac+https://HOST/v1?...")
    api = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    api = api.removesuffix("/search")
    values: dict[str, Any] = {"query": []}
    assets: tuple[str, ...] | None = None
    sign = None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "collections":
            values["collections"] = tuple(c for c in value.split(",") if c)
        elif key == "datetime":
            values["datetime"] = value
        elif key in ("max_items", "limit"):
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{key} in {url!r} must be a positive integer, got {value!r}")
            values[key] = int(value)
        elif key == "assets":
            assets = tuple(a for a in value.split(",") if a)
        elif key == "sign":
            sign = value
        elif key == "query":
            values["query"].append(unquote(value))
        else:
            values["query"].append(f"{key}{value if value[:1] in '<>=!' else '=' + value}")
    values["query"] = tuple(values["query"])
    return StacSpec(search=StacSearch(api=api, **values), assets=assets, sign=sign)


# --- reading STAC documents --------------------------------------------------------------------


def _session() -> Any:
    """A requests session that retries throttling, server errors and resets with back-off."""
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    retry = Retry(
        total=5,
        backoff_factor=0.25,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _stac_io() -> Any:
    """A pystac IO that reads URLs through a retrying session and remembers the first read."""
    from pystac.stac_io import DefaultStacIO

    class RetryingStacIO(DefaultStacIO):
        def __init__(self) -> None:
            super().__init__()
            self.session = _session()
            self.memo: dict[str, str] = {}

        def read_text_from_href(self, href: str) -> str:
            if href in self.memo:
                return self.memo.pop(href)
            if href.startswith(("http://", "https://")):
                response = self.session.get(href, timeout=(10, 60))
                response.raise_for_status()
                return str(response.text)
            return str(super().read_text_from_href(href))

    return RetryingStacIO()


def _read_document(href: str, io: Any) -> dict[str, Any]:
    """Read and parse a STAC JSON document; one-line errors naming the href."""
    try:
        text = io.read_text_from_href(href)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"STAC document {href} does not exist") from err
    except Exception as err:
        reason = error_line(err)[:300]
        raise ArchiveError(
            f"could not read the STAC document at {href} ({reason}); check the address, the "
            "network and any credentials"
        ) from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArchiveError(
            f"{href} is not a STAC catalog: not JSON ({err.msg} at line {err.lineno}); give a "
            "catalog.json, collection.json, item or ItemCollection (.json/.geojson)"
        ) from err
    kind = doc.get("type") if isinstance(doc, dict) else None
    if kind not in ("Catalog", "Collection", "Feature", "FeatureCollection"):
        raise ArchiveError(
            f"{href} is not a STAC catalog, collection, item or ItemCollection "
            f"(its 'type' is {kind!r}); give the catalog's catalog.json, or a saved search result"
        )
    if kind == "FeatureCollection":
        features = doc.get("features") or []
        if features and "stac_version" not in features[0]:
            raise ArchiveError(
                f"{href} is a GeoJSON FeatureCollection, not a STAC ItemCollection (its features "
                "have no stac_version); an ROI file goes to --roi, not --archive"
            )
    io.memo[href] = text
    return doc


def _walk(catalog: "pystac.Catalog", problems: list[Problem]) -> Iterable["pystac.Item"]:
    """Items under a catalog; a child or item link that cannot be read is a problem, not fatal."""
    import pystac

    root = catalog.get_root()
    for rel in ("item", "child"):
        for link in catalog.get_links(rel):
            try:
                link.resolve_stac_object(root=root)
                target = link.target
            except Exception as err:
                href = link.get_absolute_href() or str(link.target)
                reason = f"{rel} link of {catalog.id} unreadable ({error_line(err)[:300]}); skipped"
                problems.append(Problem(href, reason))
                continue
            if isinstance(target, pystac.Item):
                yield target
            elif isinstance(target, pystac.Catalog):
                yield from _walk(target, problems)


def _static_items(href: str, problems: list[Problem]) -> Iterable["pystac.Item"]:
    """Items of a static catalog / collection / item / ItemCollection (walked recursively)."""
    import pystac

    io = _stac_io()
    if not href.startswith(("http://", "https://")):
        href = os.path.abspath(href)
    doc = _read_document(href, io)
    kind = doc["type"]
    if kind == "FeatureCollection":
        io.memo.pop(href, None)
        collection = pystac.ItemCollection.from_dict(doc, preserve_dict=False)
        for item in collection.items:
            if item.get_self_href() is None:
                item.set_self_href(href)  # relative asset hrefs resolve against the file
            yield item
        return
    if kind == "Feature":
        yield pystac.Item.from_file(href, stac_io=io)
        return
    cls = pystac.Collection if kind == "Collection" else pystac.Catalog
    yield from _walk(cls.from_file(href, stac_io=io), problems)


def _search_items(search: StacSearch, roi: "ROI | None") -> list["pystac.Item"]:
    """Items of a STAC API search over the ROI, following pages up to ``max_items``."""
    from pystac_client import Client
    from pystac_client.stac_api_io import StacApiIO
    from urllib3.util.retry import Retry

    if roi is None:
        raise ArchiveError(
            f"a STAC API search ({search.api}) needs an ROI: give --roi (it is sent as the "
            "search's intersects geometry)"
        )
    retry = Retry(
        total=5,
        backoff_factor=0.25,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
    )
    try:
        client = Client.open(search.api, stac_io=StacApiIO(max_retries=retry, timeout=60))
        found = client.search(
            collections=list(search.collections) or None,
            datetime=search.datetime,
            query=list(search.query) or None,
            intersects=shapely.geometry.mapping(shapely.from_wkt(roi.wkt_wgs84)),
            max_items=search.max_items,
            limit=min(search.limit, search.max_items),
        )
        items = list(found.items())
    except Exception as err:
        reason = error_line(err)[:300]
        raise ArchiveError(
            f"STAC search failed at {search.describe()}: {reason}; check the API URL, the "
            "collection ids and the network"
        ) from err
    if not items:
        b = roi.bounds_wgs84
        raise ArchiveError(
            f"the STAC search {search.describe()} returned no items over the ROI (lon/lat "
            f"{b[0]:.4f},{b[1]:.4f},{b[2]:.4f},{b[3]:.4f}); widen the datetime range or the "
            "ROI, relax the query, or check the collection id"
        )
    return items


# --- items -> raster items ----------------------------------------------------------------------


@dataclass
class _Band:
    name: str
    common: str | None
    dtype: str | None
    nodata: float | None


@dataclass
class _Asset:
    """The bands of one asset that are kept, on one pixel grid."""

    key: str
    path: str
    indexes: list[int]
    bands: list[_Band]
    crs: CRS
    transform: tuple[float, ...]
    width: int
    height: int
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[Any, ...]:
        return (
            self.crs.to_wkt(),
            tuple(round(v, 9) for v in self.transform),
            self.width,
            self.height,
            self.dtype,
        )


def _is_raster(asset: dict[str, Any]) -> bool:
    roles = set(asset.get("roles") or [])
    if roles & SKIPPED_ROLES and "data" not in roles:
        return False
    media = str(asset.get("type") or "").lower()
    if media:
        return "tiff" in media or "jp2" in media or "geotiff" in media
    tail = str(asset.get("href", "")).split("?", 1)[0].lower()
    return os.path.splitext(tail)[1] in RASTER_EXTENSIONS


def _asset_bands(key: str, asset: dict[str, Any]) -> list[_Band]:
    """Band names from ``eo:bands`` / ``bands`` / ``raster:bands``; else the asset key."""
    eo = asset.get("eo:bands") or []
    raster = asset.get("raster:bands") or []
    generic = asset.get("bands") or []  # STAC 1.1: one list with eo:/raster: fields
    count = max(len(eo), len(raster), len(generic), 1)
    bands = []
    for i in range(count):
        e = eo[i] if i < len(eo) else {}
        r = raster[i] if i < len(raster) else {}
        g = generic[i] if i < len(generic) else {}
        name = e.get("name") or g.get("name")
        if not name:
            name = key if count == 1 else f"{key}_{i + 1}"
        common = e.get("common_name") or g.get("eo:common_name")
        dtype = r.get("data_type") or g.get("data_type") or asset.get("data_type")
        nodata = r.get("nodata", g.get("nodata", asset.get("nodata")))
        if isinstance(nodata, str):  # "nan", "inf"
            nodata = float(nodata)
        bands.append(_Band(str(name), common, dtype, nodata))
    return bands


def _selection(
    assets: dict[str, dict[str, Any]], keep: Sequence[str] | None
) -> dict[str, list[int]]:
    """Which bands of which raster assets to keep: asset key -> 0-based band indexes.

    Each requested name is taken once: an asset whose key is the name first, else the first
    asset (in item order) with a band of that name or common name. So ``red`` picks the COG
    asset ``red`` and not also a ``red-jp2`` copy of the same band.
    """
    bands = {key: _asset_bands(key, asset) for key, asset in assets.items()}
    if keep is None:
        return {key: list(range(len(b))) for key, b in bands.items()}
    chosen: dict[str, list[int]] = {}
    lowered = {key.lower(): key for key in assets}
    rest = []
    for name in keep:
        key = lowered.get(name.lower())
        if key is not None:
            chosen.setdefault(key, list(range(len(bands[key]))))
        else:
            rest.append(name.lower())
    for name in rest:
        for key, asset_bands in bands.items():
            hit = [
                i
                for i, b in enumerate(asset_bands)
                if name in (b.name.lower(), (b.common or "").lower())
            ]
            if hit:
                if hit[0] not in chosen.setdefault(key, []):
                    chosen[key].append(hit[0])
                break
    return {key: sorted(idx) for key, idx in chosen.items() if idx}


def _proj_crs(fields: dict[str, Any]) -> CRS | None:
    code = fields.get("proj:code")
    if code:
        return CRS.from_user_input(code)
    if fields.get("proj:epsg"):
        return CRS.from_epsg(int(fields["proj:epsg"]))
    if fields.get("proj:wkt2"):
        return CRS.from_wkt(fields["proj:wkt2"])
    if fields.get("proj:projjson"):
        return CRS.from_user_input(json.dumps(fields["proj:projjson"]))
    return None


def _family(item: "pystac.Item") -> str:
    props = item.properties
    for text in (props.get("platform"), props.get("constellation"), item.collection_id, item.id):
        if not text:
            continue
        for pattern, family in _FAMILY_PATTERNS:
            if pattern.search(str(text)):
                return family
    token = re.split(r"[^A-Za-z0-9]+", item.collection_id or "stac")[0].lower()
    return token or "stac"


def _asset_of(
    item: "pystac.Item",
    key: str,
    asset: dict[str, Any],
    href: str,
    indexes: list[int],
    bands: list[_Band],
) -> _Asset | Problem:
    """Grid and dtype from the proj/raster extensions, or from the file when they are missing."""
    fields = {**item.properties, **asset}
    path = gdal_path(href)
    try:
        crs = _proj_crs(fields)
    except Exception as err:
        return Problem(path, f"asset {key!r} of item {item.id}: unusable proj CRS ({err}); skipped")
    shape = fields.get("proj:shape")
    transform = fields.get("proj:transform")
    dtypes = {b.dtype for b in bands}
    if crs is not None and shape and transform and None not in dtypes and len(dtypes) == 1:
        dtype = dtypes.pop()
        return _Asset(
            key,
            path,
            indexes,
            bands,
            crs,
            tuple(transform[:6]),
            int(shape[1]),
            int(shape[0]),
            str(dtype),
        )
    configure_remote([path])  # GDAL's options in place before its first remote open
    meta = read_meta(path)  # no proj/raster metadata: read the header (and last block)
    if isinstance(meta, Problem):
        return Problem(path, f"asset {key!r} of item {item.id}: {meta.reason}")
    if max(indexes) >= meta.count:
        return Problem(
            path,
            f"asset {key!r} of item {item.id}: has {meta.count} bands, its "
            f"metadata names {len(bands)}; skipped",
        )
    for i, b in enumerate(bands):
        b.dtype = meta.dtype
        if b.nodata is None:
            b.nodata = meta.nodata
        if b.name == (key if len(bands) == 1 else f"{key}_{i + 1}") and meta.descriptions[i]:
            b.name = str(meta.descriptions[i])
    return _Asset(
        key, path, indexes, bands, meta.crs, meta.transform, meta.width, meta.height, meta.dtype
    )


def _vrt(assets: list[_Asset]) -> str:
    """A VRT stacking the kept bands of assets on one grid (sources opened only when read)."""
    first = assets[0]
    a, b, c, d, e, f = first.transform
    gdal_type = _GDAL_TYPES.get(first.dtype, "Float32")
    lines = [
        f'<VRTDataset rasterXSize="{first.width}" rasterYSize="{first.height}">',
        f"  <SRS>{escape(first.crs.to_wkt())}</SRS>",
        f"  <GeoTransform>{c!r}, {a!r}, {b!r}, {f!r}, {d!r}, {e!r}</GeoTransform>",
    ]
    n = 0
    for asset in assets:
        for index, band in zip(asset.indexes, asset.bands, strict=True):
            n += 1
            lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{n}">')
            lines.append(f"    <Description>{escape(band.name)}</Description>")
            if band.nodata is not None:
                lines.append(f"    <NoDataValue>{band.nodata!r}</NoDataValue>")
            lines += [
                "    <SimpleSource>",
                f'      <SourceFilename relativeToVRT="0">{escape(asset.path)}</SourceFilename>',
                f"      <SourceBand>{index + 1}</SourceBand>",
                f'      <SourceProperties RasterXSize="{asset.width}" '
                f'RasterYSize="{asset.height}" DataType="{gdal_type}" />',
                f'      <SrcRect xOff="0" yOff="0" xSize="{asset.width}" ySize="{asset.height}" />',
                f'      <DstRect xOff="0" yOff="0" xSize="{asset.width}" ySize="{asset.height}" />',
                "    </SimpleSource>",
                "  </VRTRasterBand>",
            ]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"


def _write_vrt(xml: str, scene: str) -> str:
    """Write a VRT into the cache (content-addressed: the same item gives the same file)."""
    digest = hashlib.sha256(xml.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", scene)[:80]
    path = cache_dir("stac") / digest / f"{safe}.vrt"  # the file's stem is the item's id
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, xml)
    return str(path)


def raster_items(
    item: "pystac.Item",
    keep: Sequence[str] | None = None,
    sign: Callable[[str], str] | None = None,
) -> tuple[list[RasterItem], list[Problem]]:
    """The raster items of one STAC item: one per pixel grid of its kept raster assets.

    Args:
        item: The STAC item.
        keep: Bands to keep (asset keys, band names or common names); None for all.
        sign: Signs an asset URL before it is read.

    Returns:
        Raster items (VRT paths, asset paths in ``assets``) and problems (per asset).
    """
    problems: list[Problem] = []
    by_grid: dict[tuple[Any, ...], list[_Asset]] = defaultdict(list)
    base = item.get_self_href()
    as_dicts = {key: a.to_dict() for key, a in item.assets.items()}
    rasters = {key: d for key, d in as_dicts.items() if _is_raster(d)}
    for key, indexes in _selection(rasters, keep).items():
        asset_obj, asset = item.assets[key], rasters[key]
        bands = _asset_bands(key, asset)
        href = asset_obj.get_absolute_href() or asset["href"]
        if base and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://|^/", href):
            href = urljoin(base, href)
        try:
            href = sign(href) if sign is not None else href
            found = _asset_of(item, key, asset, href, indexes, [bands[i] for i in indexes])
        except Exception as err:
            reason = error_line(err)[:300]
            found = Problem(href, f"asset {key!r} of item {item.id}: {reason}; skipped")
        if isinstance(found, Problem):
            problems.append(found)
            continue
        sx, rot_x, _, rot_y, sy, _ = found.transform
        if rot_x != 0 or rot_y != 0 or sx <= 0 or sy >= 0:
            problems.append(
                Problem(
                    found.path,
                    f"asset {key!r} of item {item.id}: rotated or flipped grid (not north-up); "
                    "skipped",
                )
            )
            continue
        by_grid[found.grid].append(found)
    family = _family(item)
    out: list[RasterItem] = []
    for assets in by_grid.values():
        first = assets[0]
        a, _, c, _, e, f = first.transform
        names = [b.name for part in assets for b in part.bands]
        if len(set(names)) < len(names):  # e.g. two assets both called "1": prefix the key
            for part in assets:
                for b in part.bands:
                    b.name = f"{part.key}_{b.name}"
            names = [b.name for part in assets for b in part.bands]
        scene = item.id if len(by_grid) == 1 else f"{item.id}_{a:g}m"
        xml = _vrt(assets)
        bounds = (c, f + e * first.height, c + a * first.width, f)
        out.append(
            RasterItem(
                scene=scene,
                paths=[_write_vrt(xml, scene)],
                band_names=names,
                separate=False,
                family=family,
                dtype=first.dtype,
                crs=first.crs,
                res=(abs(a), abs(e)),
                bounds=bounds,
                width=first.width,
                height=first.height,
                nodata=first.bands[0].nodata,
                assets=[part.path for part in assets],
                acquired=_acquired(item),
                band_sources=[(part.path, i + 1) for part in assets for i in part.indexes],
                aliases={b.common: b.name for part in assets for b in part.bands if b.common},
            )
        )
    return out, problems


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


def load_stac(spec: StacSpec, roi: "ROI | None" = None) -> tuple[list[RasterItem], list[Problem]]:
    """Read a STAC archive into raster items.

    Args:
        spec: What to read.
        roi: Static catalogs: items whose bbox misses the ROI are left out. API searches: the
            search's ``intersects`` (required).

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
        items: Iterable[pystac.Item] = _search_items(spec.search, roi)
        where = spec.search.describe()
    elif spec.href is not None:
        items = _static_items(spec.href, problems)
        where = spec.href
    else:  # pragma: no cover - StacSpec is built by the parsers above
        raise ValueError("a StacSpec needs href or search")
    roi_wgs84 = shapely.from_wkt(roi.wkt_wgs84) if roi is not None else None
    found: list[RasterItem] = []
    seen = 0
    for item in items:
        if not _overlaps(item, roi_wgs84):
            continue
        seen += 1
        got, bad = raster_items(item, spec.assets, sign)
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
    return found, problems
