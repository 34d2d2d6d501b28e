import json
from pathlib import Path

import geopandas as gpd
import pytest
import shapely

from geopera.core.errors import ROIError
from geopera.data.roi import load_roi


def test_geojson_without_crs_is_wgs84_and_unioned(tmp_path: Path) -> None:
    path = tmp_path / "roi.geojson"
    features = [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)}
        for g in (shapely.box(10, 45, 11, 46), shapely.box(10.5, 45, 11.5, 46))
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    roi = load_roi(path)
    assert roi.crs.to_epsg() == 4326
    assert roi.geometry.equals(shapely.box(10, 45, 11.5, 46))


@pytest.mark.parametrize("suffix", [".gpkg", ".shp"])
def test_other_vector_formats_and_reprojection(tmp_path: Path, suffix: str) -> None:
    utm = shapely.box(500000, 5000000, 510000, 5010000)
    path = tmp_path / f"roi{suffix}"
    gpd.GeoDataFrame(geometry=[utm], crs="EPSG:32633").to_file(path)
    roi = load_roi(path)
    assert roi.crs.to_epsg() == 32633
    back = roi.to_crs("EPSG:32633")
    assert back.symmetric_difference(utm).area < 1e-3
    lon0, lat0, lon1, lat1 = roi.bounds_wgs84
    assert 14.9 < lon0 < lon1 < 15.2
    assert 45.1 < lat0 < lat1 < 45.3


def test_wkt_bbox_and_invalid_geometry_repair() -> None:
    assert load_roi("10,45,11,46").geometry.equals(shapely.box(10, 45, 11, 46))
    roi = load_roi("EPSG:32633;POLYGON((0 0, 10 0, 10 10, 0 10, 0 0))")
    assert roi.crs.to_epsg() == 32633
    assert roi.geometry.area == 100
    bowtie = load_roi("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))")  # self-intersecting
    assert bowtie.geometry.is_valid
    assert bowtie.geometry.area == pytest.approx(0.5)


def test_bad_rois(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="WKT polygon or a bbox"):
        load_roi(tmp_path / "missing.geojson")
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(ROIError, match="empty"):
        load_roi(empty)
    line = tmp_path / "line.geojson"
    gpd.GeoDataFrame(geometry=[shapely.LineString([(0, 0), (1, 1)])], crs=4326).to_file(line)
    with pytest.raises(ROIError, match="no area"):
        load_roi(line)
    junk = tmp_path / "junk.gpkg"
    junk.write_text("not a geopackage")
    with pytest.raises(ROIError, match="could not be read"):
        load_roi(junk)
    with pytest.raises(ROIError, match="minx<maxx"):
        load_roi("11,45,10,46")


def test_a_text_too_long_for_a_path_is_a_user_error() -> None:
    """Found by the fuzz suite: an unmatched EPSG prefix made the WKT a path of 400 characters."""
    text = "EPSG:0000000\x80;POLYGON((" + ", ".join(["1e16 1e16"] * 40) + "))"
    with pytest.raises(ROIError, match="nor a path this system can look up"):
        load_roi(text)
