"""Labels onto image grids: rasters (aligned, reprojected, chips), polygons and boxes."""

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from geopera.data.labelled.labels import (
    IGNORE,
    Grid,
    LabelError,
    read_boxes,
    read_label_raster,
    read_label_vector,
)
from tests.fakes.archive import write_raster

ORIGIN = (500000.0, 4000000.0)


def _image(tmp_path: Path, crs: str | None = "EPSG:32633") -> Path:
    path = tmp_path / "image.tif"
    write_raster(path, np.zeros((3, 40, 60), np.uint16), crs, ORIGIN, 10.0)
    return path


def test_aligned_label_raster_is_read_as_is_with_nodata_ignored(tmp_path: Path) -> None:
    labels = np.random.default_rng(0).integers(0, 4, (1, 40, 60)).astype(np.uint8)
    write_raster(tmp_path / "l.tif", labels, "EPSG:32633", ORIGIN, 10.0, nodata=0)
    out = read_label_raster(tmp_path / "l.tif", Grid.of(_image(tmp_path)))
    assert np.array_equal(out == IGNORE, labels[0] == 0)
    assert np.array_equal(out[labels[0] > 0], labels[0][labels[0] > 0])


def test_label_raster_on_another_grid_is_reprojected_nearest(tmp_path: Path) -> None:
    # 20 m labels, two classes split at x = 500300: the 10 m image's columns 0-29 vs 30-59
    labels = np.ones((1, 20, 30), np.uint8)
    labels[0, :, 15:] = 2
    write_raster(tmp_path / "l.tif", labels, "EPSG:32633", ORIGIN, 20.0)
    out = read_label_raster(tmp_path / "l.tif", Grid.of(_image(tmp_path)))
    assert out.shape == (40, 60)
    assert (out[:, :30] == 1).all()
    assert (out[:, 30:] == 2).all()


def test_ungeoreferenced_labels_must_match_the_chip_size(tmp_path: Path) -> None:
    image = _image(tmp_path, crs=None)
    write_raster(tmp_path / "l.tif", np.ones((1, 20, 20), np.uint8), None, (0, 0), 1.0)
    with pytest.raises(LabelError, match="no georeference"):
        read_label_raster(tmp_path / "l.tif", Grid.of(image))


def test_polygons_rasterise_with_the_class_field(tmp_path: Path) -> None:
    x0, y0 = ORIGIN
    frame = gpd.GeoDataFrame(
        {"cls": [3, 5]},
        geometry=[box(x0, y0 - 100, x0 + 100, y0), box(x0 + 300, y0 - 400, x0 + 600, y0 - 200)],
        crs="EPSG:32633",
    ).to_crs("EPSG:4326")  # another CRS than the image: reprojected on read
    frame.to_file(tmp_path / "l.geojson")
    grid = Grid.of(_image(tmp_path))
    out = read_label_vector(tmp_path / "l.geojson", grid, "cls")
    assert (out[1:9, 1:9] == 3).all()
    assert (out[21:39, 31:59] == 5).all()
    assert out[15, 15] == IGNORE  # outside every polygon: unlabelled
    binary = read_label_vector(tmp_path / "l.geojson", grid, None)
    assert binary[15, 15] == 0
    assert binary[5, 5] == 1
    with pytest.raises(LabelError, match="no field 'missing'; its fields are: cls"):
        read_label_vector(tmp_path / "l.geojson", grid, "missing")


def test_voc_and_csv_boxes_of_neon_agree(shared_data: Path) -> None:
    folder = shared_data / "d_detection" / "neon_trees_deepforest"
    image = folder / "OSBS_029.tif"
    grid = Grid.of(image)
    csv = read_boxes(folder / "OSBS_029.csv", image, grid)
    voc = read_boxes(folder / "OSBS_029.xml", image, grid)
    assert len(csv.names) == 61
    assert np.array_equal(np.sort(csv.xyxy, axis=0), np.sort(voc.xyxy, axis=0))
    assert set(csv.names) == {"Tree"}


def test_map_coordinate_boxes_equal_pixel_boxes(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "d_detection" / "neon_trees_deepforest"
    image = folder / "OSBS_029.tif"
    grid = Grid.of(image)
    pixel = read_boxes(folder / "OSBS_029.csv", image, grid)
    t = grid.transform
    rows = []
    for x0, y0, x1, y1 in pixel.xyxy:
        (mx0, my0), (mx1, my1) = t * (float(x0), float(y0)), t * (float(x1), float(y1))
        rows.append(f"OSBS_029.tif,{mx0},{my1},{mx1},{my0},Tree")
    (tmp_path / "map.csv").write_text("image_path,xmin,ymin,xmax,ymax,label\n" + "\n".join(rows))
    mapped = read_boxes(tmp_path / "map.csv", image, grid, coords="map")
    assert np.allclose(mapped.xyxy, pixel.xyxy, atol=1e-3)


def test_boxes_from_building_polygons(shared_data: Path) -> None:
    folder = shared_data / "b_segmentation" / "spacenet4_atlanta_buildings"
    image = folder / "sample_geotiff.tif"
    boxes = read_boxes(folder / "geotiff_labels.geojson", image, Grid.of(image))
    table = shared_data / "d_detection" / "spacenet4_atlanta_buildings" / "building_boxes_px.csv"
    reference = read_boxes(table, image, Grid.of(image))  # the data provider's own boxes
    assert len(boxes.names) == len(reference.names) > 30
    assert np.allclose(np.sort(boxes.xyxy, axis=0), np.sort(reference.xyxy, axis=0), atol=0.6)
