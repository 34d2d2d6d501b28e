"""STAC Items beside geopera's outputs, and a ``catalog.json`` for their folder.

Each output file gets ``<file name>.item.json``: its footprint in degrees, the ``proj``
extension (CRS, shape, transform) and, for rasters, the ``raster`` extension (data type, nodata,
scale) and the ``classification`` extension when the raster holds classes (geopera writes its
class values and names in the raster's tags). ``catalog.json`` links every item of the folder;
it is rewritten from the items each time, and a ``catalog.json`` that geopera did not write is
left alone (a note says so).
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pystac
import rasterio
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterBand, RasterExtension
from rasterio.warp import transform_bounds
from shapely.geometry import box, mapping

from geopera.core.errors import note
from geopera.core.outputs import write_json
from geopera.core.raster_tags import read_class_tags

#: Marks a catalog geopera wrote (and may rewrite).
MARK = "geopera:outputs"
MEDIA = {
    ".tif": pystac.MediaType.COG,
    ".parquet": "application/vnd.apache.parquet",
    ".gpkg": pystac.MediaType.GEOPACKAGE,
    ".geojson": pystac.MediaType.GEOJSON,
}


def item_path(path: Path) -> Path:
    """Where the item of an output file goes."""
    return path.with_name(f"{path.name}.item.json")


def _projection(item: pystac.Item, crs: Any, shape: list[int] | None, transform: Any) -> None:
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg() if crs is not None else None
    if epsg is not None:
        proj.code = f"EPSG:{epsg}"
    elif crs is not None:
        proj.wkt2 = crs.to_wkt()
    if shape is not None:
        proj.shape = shape
    if transform is not None:
        proj.transform = list(transform)[:6]


def _classes(asset: pystac.Asset, classes: list[tuple[Any, str]]) -> None:
    ext = ClassificationExtension.ext(asset, add_if_missing=True)
    ext.classes = [
        Classification.create(value=int(v), description=str(n), name=_safe_name(str(n)))
        for v, n in classes
    ]


def _safe_name(name: str) -> str:
    """A class name as the classification extension allows (letters, digits, - and _)."""
    cleaned = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cleaned or "class"


def raster_item(path: Path, properties: dict[str, Any]) -> pystac.Item:
    """The item of a raster output."""
    with rasterio.open(path) as ds:
        bounds = (
            transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21) if ds.crs else None
        )
        item = _item(path, bounds, properties)
        _projection(item, ds.crs, [ds.height, ds.width], ds.transform)
        asset = pystac.Asset(f"./{path.name}", media_type=MEDIA[".tif"], roles=["data"])
        item.add_asset("data", asset)
        bands = [
            RasterBand.create(nodata=ds.nodata, data_type=ds.dtypes[i], scale=ds.scales[i])
            for i in range(ds.count)
        ]
        RasterExtension.ext(asset, add_if_missing=True).bands = bands
        classes = read_class_tags(ds.tags())
    if classes is not None:
        _classes(asset, classes)
    return item


def vector_item(path: Path, properties: dict[str, Any]) -> pystac.Item:
    """The item of a vector output (its features' extent)."""
    import geopandas as gpd

    frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    found = frame.to_crs("EPSG:4326").total_bounds if len(frame) and frame.crs else None
    item = _item(path, tuple(found) if found is not None else None, properties)
    _projection(item, frame.crs, None, None)
    media = MEDIA.get(path.suffix.lower(), "application/octet-stream")
    item.add_asset("data", pystac.Asset(f"./{path.name}", media_type=media, roles=["data"]))
    item.properties["geopera:features"] = len(frame)
    return item


def _item(path: Path, bounds: Any, properties: dict[str, Any]) -> pystac.Item:
    """An item with the footprint of ``bounds`` in degrees.

    A file without a CRS (``bounds`` None) gets an item without geometry, as STAC allows.
    """
    if bounds is None:
        geometry, bbox = None, None
    else:
        west, south, east, north = (float(v) for v in bounds)
        geometry, bbox = mapping(box(west, south, east, north)), [west, south, east, north]
    return pystac.Item(
        id=path.name, geometry=geometry, bbox=bbox, datetime=datetime.now(UTC),
        properties=dict(properties),
    )  # fmt: skip


def write_items(
    paths: list[Path],
    properties: dict[str, Any],
    title: str,
    links: list[pystac.Link] | None = None,
    per_file: dict[Path, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write the item of each output file and refresh its folder's ``catalog.json``.

    Args:
        paths: Output files (rasters or vector files), all in one folder.
        properties: Added to every item (``geopera:`` fields, ``emb:`` fields).
        title: The catalog's description.
        links: Added to every item (the backbone card it came from).
        per_file: Properties of one file only, by path.

    Returns:
        The item files written.
    """
    written = []
    for path in paths:
        fields = {**properties, **(per_file or {}).get(path, {})}
        vector = path.suffix.lower() != ".tif"
        item = vector_item(path, fields) if vector else raster_item(path, fields)
        for link in links or []:
            item.add_link(link.clone())
        target = item_path(path)
        write_json(target, item.to_dict(include_self_link=False, transform_hrefs=False))
        written.append(target)
    if paths:
        write_catalog(paths[0].parent, title)
    return written


def write_catalog(folder: Path, title: str) -> Path | None:
    """``folder/catalog.json`` linking every ``*.item.json`` in the folder (None: left alone)."""
    path = folder / "catalog.json"
    if path.exists() and json.loads(path.read_text() or "{}").get(MARK) is not True:
        note(f"{path} was not written by geopera: left as it is (the items are beside the files)")
        return None
    catalog = pystac.Catalog(id=folder.name or "outputs", description=title)
    catalog.extra_fields[MARK] = True
    for file in sorted(folder.glob("*.item.json")):
        catalog.add_link(pystac.Link("item", f"./{file.name}", pystac.MediaType.GEOJSON))
    data = catalog.to_dict(include_self_link=False, transform_hrefs=False)
    for link in data["links"]:  # relative: the folder may be renamed or moved whole
        if link["rel"] == "root":
            link["href"] = "./catalog.json"
    write_json(path, data)
    return path
