"""STAC items beside outputs: rasters with and without a CRS, classes, and a foreign catalog."""

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.transform import from_origin

from geopera.core.errors import GeoperaNote
from geopera.core.stac import write_items


def _raster(path: Path, crs: str | None) -> Path:
    origin = from_origin(500_000, 5_000_000, 10, 10)
    profile = {"driver": "GTiff", "width": 8, "height": 8, "count": 1, "dtype": "uint8",
               "nodata": 255, "crs": crs, "transform": origin}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 8, 8), dtype=np.uint8))
        dst.update_tags(classes="[0, 7]", class_names='["no data here", "forest/wood"]')
    return path


def test_items_validate_with_and_without_a_crs(tmp_path: Path) -> None:
    paths = [_raster(tmp_path / "geo.tif", "EPSG:32633"), _raster(tmp_path / "pixels.tif", None)]
    written = write_items(paths, {"geopera:task": "segmentation"}, "test outputs")
    items = {p.name: pystac.Item.from_file(str(p)) for p in written}
    for item in items.values():
        item.validate()  # offline: core, proj, raster, classification
    geo, pixels = items["geo.tif.item.json"], items["pixels.tif.item.json"]
    assert geo.bbox is not None
    assert 14 < geo.bbox[0] < 16  # UTM 33N near 15 degrees east
    assert pixels.geometry is None  # no CRS: no footprint, as STAC allows
    classes = geo.assets["data"].extra_fields["classification:classes"]
    assert [c["value"] for c in classes] == [0, 7]
    assert classes[1]["name"] == "forest_wood"  # the extension's name rule; the text stays
    assert classes[1]["description"] == "forest/wood"
    catalog = pystac.Catalog.from_file(str(tmp_path / "catalog.json"))
    assert sorted(i.id for i in catalog.get_items()) == ["geo.tif", "pixels.tif"]


def test_a_catalog_geopera_did_not_write_is_left_alone(tmp_path: Path) -> None:
    mine = {"type": "Catalog", "id": "mine", "description": "a user's", "links": []}
    (tmp_path / "catalog.json").write_text(json.dumps(mine))
    with pytest.warns(GeoperaNote, match="was not written by geopera: left as it is"):
        write_items([_raster(tmp_path / "geo.tif", "EPSG:32633")], {}, "test outputs")
    assert json.loads((tmp_path / "catalog.json").read_text()) == mine
    assert (tmp_path / "geo.tif.item.json").is_file()
