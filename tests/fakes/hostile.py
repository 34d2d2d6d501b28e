"""A STAC catalog written by someone hostile: item ids that try to name files outside ``--out``.

Every item points at one real 13-band Sentinel-2 COG (``scene.tif``, from ``../shared/data``);
only the ids differ. Items are stored under plain names (``items/item00.json``), so the catalog
itself is valid and served as any bucket would serve it. The catalog's own id climbs too.
"""

import json
import os
from pathlib import Path
from typing import Any

import rasterio
from rasterio.warp import transform_bounds, transform_geom

from tests.fakes.stac import S2_BANDS, write_cog

#: Ids that climb, are absolute, encoded, full-width, reserved, too long, or clash once cleaned
#: (``ABS`` is replaced by an absolute path outside the served folder).
HOSTILE_IDS = (
    "../../escaped",
    "ABS",
    "%2e%2e%2fx",
    "a/../../b",
    "C:\\x",
    "x\u0000y",
    "．．／．．／wide",
    "CON",
    "trailing. ",
    "y" * 300,
    "Same",
    "same",
    "a_b",
    "a/b",
    "[bold]x[/y]",  # rich markup: shown as text on the progress bar and in tables
)


def _item(item_id: str, src: Any, href: str) -> dict[str, Any]:
    left, bottom, right, top = src.bounds
    ring = [(left, bottom), (right, bottom), (right, top), (left, top), (left, bottom)]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [
            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
            "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        ],
        "id": item_id,
        "geometry": transform_geom(
            src.crs, "EPSG:4326", {"type": "Polygon", "coordinates": [ring]}
        ),
        "bbox": list(transform_bounds(src.crs, "EPSG:4326", *src.bounds)),
        "properties": {
            "datetime": "2020-05-18T10:00:00Z",
            "platform": "sentinel-2a",
            "proj:code": f"EPSG:{src.crs.to_epsg()}",
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
        },
        "assets": {
            "image": {
                "href": href,
                "type": "image/tiff; application=geotiff",
                "roles": ["data"],
                "eo:bands": [{"name": b} for b in S2_BANDS],
            }
        },
        "links": [{"rel": "root", "href": "../catalog.json"}],
    }


def write_scene(root: Path, shared: Path) -> str:
    """The one real 13-band COG every item points at (``root/scene.tif``); an ROI inside it."""
    scene = shared / "a_pretrain" / "sentinel2_eolearn_slovenia" / "S2L1C_reference_scene0.tif"
    with rasterio.open(scene) as src:
        write_cog(src.read(), src.profile, root / "scene.tif", 128)
        left, bottom, right, top = src.bounds
        epsg = src.crs.to_epsg()
    d = (right - left) / 4
    x0, y0, x1, y1 = left + d, bottom + d, right - d, top - d
    return f"EPSG:{epsg};POLYGON(({x0} {y0}, {x1} {y0}, {x1} {y1}, {x0} {y1}, {x0} {y0}))"


def write_catalog(folder: Path, ids: list[str], scene: Path) -> None:
    """A catalog in ``folder`` (created) with one item per id, each over ``scene``."""
    (folder / "items").mkdir(parents=True)
    href = os.path.relpath(scene, folder / "items")
    with rasterio.open(scene) as src:
        for n, item_id in enumerate(ids):
            item = _item(item_id, src, href)
            (folder / "items" / f"item{n:02d}.json").write_text(json.dumps(item))
    catalog = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "../../escapedcat",
        "description": "a catalog that tries to write outside --out",
        "links": [
            {"rel": "root", "href": "./catalog.json"},
            *(
                {"rel": "item", "href": f"./items/item{n:02d}.json", "type": "application/json"}
                for n in range(len(ids))
            ),
        ],
    }
    (folder / "catalog.json").write_text(json.dumps(catalog))


def files_under(folder: Path) -> set[Path]:
    """Every file (not folder) below ``folder``."""
    return {p for p in folder.rglob("*") if p.is_file()}
