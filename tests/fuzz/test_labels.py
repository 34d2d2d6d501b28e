"""Label tables: box tables (CSV, Pascal VOC, vector files) and class polygons."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geopera.data.labelled.labels import Grid, read_boxes, read_label_vector
from tests.fuzz.conftest import BUDGETS, fuzz, scalars
from tests.fuzz.test_roi import documents as geojson_documents

GRID = Grid(64, 64, CRS.from_epsg(32633), from_origin(500000, 4000640, 10, 10))
COLUMNS = ["image_path", "xmin", "ymin", "xmax", "ymax", "label", "other"]
cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-100, 1000).map(str),
    st.sampled_from(["", "a.tif", '"', ",", "nan", "1e400"]),
)
csv_tables = st.builds(
    lambda head, rows: "\n".join([",".join(head), *(",".join(r) for r in rows)]),
    st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=7),
    st.lists(st.lists(cells, max_size=7), max_size=5),
)
voc_boxes = st.lists(
    st.fixed_dictionaries(
        {"xmin": cells, "ymin": cells, "xmax": cells, "ymax": cells, "name": st.text(max_size=5)}
    ),
    max_size=3,
).map(
    lambda objs: (
        "<annotation>"
        + "".join(
            "<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            "<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>".format(**o)
            for o in objs
        )
        + "</annotation>"
    )
)
broken_xml = st.text(max_size=40)


def _boxes(case: tuple[str, str, str]) -> object:
    suffix, text, coords = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"boxes{suffix}"
        path.write_text(text)
        return read_boxes(path, Path(folder) / "a.tif", GRID, coords=coords)


box_files = st.one_of(
    st.tuples(st.just(".csv"), csv_tables, st.sampled_from(["pixel", "map", "other"])),
    st.tuples(st.just(".xml"), voc_boxes | broken_xml, st.just("pixel")),
    st.tuples(st.just(".geojson"), geojson_documents.map(json.dumps), st.just("map")),
    st.tuples(st.sampled_from([".txt", ""]), st.text(max_size=10), st.just("pixel")),
)


def _polygons(case: tuple[object, str | None]) -> object:
    doc, field = case
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.geojson"
        path.write_text(json.dumps(doc))
        return read_label_vector(path, GRID, field)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # GDAL's notes on malformed GeoJSON
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("budget", BUDGETS)
def test_box_tables(budget: int) -> None:
    fuzz(box_files, _boxes, budget)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("budget", BUDGETS)
def test_class_polygons(budget: int) -> None:
    fields = st.none() | st.sampled_from(["class", "properties", ""]) | scalars.map(str)
    fuzz(st.tuples(geojson_documents, fields), _polygons, budget)
