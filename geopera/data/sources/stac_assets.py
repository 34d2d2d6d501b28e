"""STAC assets into bands and a VRT: which assets hold pixels, their grid, their band names.

Metadata comes from the ``proj`` (grid), ``raster`` (dtype, nodata) and ``eo`` (band names,
common names) extensions when an asset has them, so listing an archive opens no file; an asset
without them is opened once (its header only).
"""

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from rasterio.crs import CRS

from geopera.core.cache import cache_dir
from geopera.core.names import inside, safe_name
from geopera.core.outputs import write_atomic
from geopera.data.sources.files import read_meta
from geopera.data.sources.model import RASTER_EXTENSIONS, FileMeta, Problem
from geopera.data.sources.remote import configure_remote, gdal_path

if TYPE_CHECKING:
    import pystac


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


@dataclass
class AssetBand:
    """One band of an asset: its name, STAC common name, dtype and nodata."""

    name: str
    common: str | None
    dtype: str | None
    nodata: float | None


@dataclass
class Asset:
    """The bands of one asset that are kept, on one pixel grid."""

    key: str
    path: str
    indexes: list[int]
    bands: list[AssetBand]
    crs: CRS
    transform: tuple[float, ...]
    width: int
    height: int
    dtype: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> tuple[Any, ...]:
        """The pixel grid signature (CRS, transform, size, dtype): assets that share it stack."""
        return (
            self.crs.to_wkt(),
            tuple(round(v, 9) for v in self.transform),
            self.width,
            self.height,
            self.dtype,
        )


def is_raster(asset: dict[str, Any]) -> bool:
    """Whether an asset holds pixels to train on (by role and media type)."""
    roles = set(asset.get("roles") or [])
    if roles & SKIPPED_ROLES and "data" not in roles:
        return False
    media = str(asset.get("type") or "").lower()
    if media:
        return "tiff" in media or "jp2" in media or "geotiff" in media
    tail = str(asset.get("href", "")).split("?", 1)[0].lower()
    return os.path.splitext(tail)[1] in RASTER_EXTENSIONS


def asset_bands(key: str, asset: dict[str, Any]) -> list[AssetBand]:
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
        bands.append(AssetBand(str(name), common, dtype, nodata))
    return bands


def band_selection(
    assets: dict[str, dict[str, Any]], keep: Sequence[str] | None
) -> dict[str, list[int]]:
    """Which bands of which raster assets to keep: asset key -> 0-based band indexes.

    Each requested name is taken once: an asset whose key is the name first, else the first
    asset (in item order) with a band of that name or common name. So ``red`` picks the COG
    asset ``red`` and not also a ``red-jp2`` copy of the same band.
    """
    bands = {key: asset_bands(key, asset) for key, asset in assets.items()}
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
        for key, of_asset in bands.items():
            hit = [
                i
                for i, b in enumerate(of_asset)
                if name in (b.name.lower(), (b.common or "").lower())
            ]
            if hit:
                if hit[0] not in chosen.setdefault(key, []):
                    chosen[key].append(hit[0])
                break
    return {key: sorted(idx) for key, idx in chosen.items() if idx}


def proj_crs(fields: dict[str, Any]) -> CRS | None:
    """The CRS named by an item's or asset's ``proj`` fields, or None."""
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


def asset_stamp(asset: dict[str, Any]) -> tuple[int, int]:
    """An asset's (size, version) for the archive index.

    ``file:size`` (or -1) and a hash of its JSON: a row read from the file is reused while the
    document is unchanged.
    """
    text = json.dumps(asset, sort_keys=True, default=str)
    return int(asset.get("file:size") or -1), int(
        hashlib.sha256(text.encode()).hexdigest()[:15], 16
    )


def asset_of(
    item: "pystac.Item",
    key: str,
    asset: dict[str, Any],
    href: str,
    indexes: list[int],
    bands: list[AssetBand],
    read_header: Callable[[str], FileMeta | Problem] = read_meta,
) -> Asset | Problem:
    """Grid and dtype from the proj/raster extensions, or from the file when they are missing.

    ``read_header`` reads the file's header (the archive index passes one that reuses a
    stored row).
    """
    fields = {**item.properties, **asset}
    path = gdal_path(href)
    try:
        crs = proj_crs(fields)
    except Exception as err:
        return Problem(path, f"asset {key!r} of item {item.id}: unusable proj CRS ({err}); skipped")
    shape = fields.get("proj:shape")
    transform = fields.get("proj:transform")
    dtypes = {b.dtype for b in bands}
    if crs is not None and shape and transform and None not in dtypes and len(dtypes) == 1:
        dtype = dtypes.pop()
        return Asset(
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
    meta = read_header(path)  # no proj/raster metadata: read the header (and last block)
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
    return Asset(
        key, path, indexes, bands, meta.crs, meta.transform, meta.width, meta.height, meta.dtype
    )


def vrt_xml(assets: list[Asset]) -> str:
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


def write_vrt(xml: str, scene: str) -> str:
    """Write a VRT into the cache (content-addressed: the same item gives the same file)."""
    digest = hashlib.sha256(xml.encode()).hexdigest()[:16]
    root = cache_dir("stac")
    # the file's stem is the item's id (readable in GDAL's messages), made a safe name
    path = inside(root, root / digest / f"{safe_name(scene)}.vrt", scene)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, xml)
    return str(path)
