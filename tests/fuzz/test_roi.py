"""ROIs as users give them: bboxes, WKT (with or without an EPSG prefix), vector files."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import strategies as st

from geopera.data.roi import load_roi
from tests.fuzz.conftest import BUDGETS, fuzz, values

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.integers(min_value=-1000, max_value=1000),
).map(str)
bboxes = st.lists(numbers, min_size=0, max_size=6).map(",".join)
rings = st.lists(st.tuples(numbers, numbers), min_size=0, max_size=6).map(
    lambda pts: ", ".join(f"{x} {y}" for x, y in pts)
)
wkt = st.builds(
    lambda kind, ring, close: f"{kind}(({ring}{')' if close else ''})",
    st.sampled_from(["POLYGON", "MULTIPOLYGON", "polygon", "POLYGON Z", "POLYGON"]),
    rings,
    st.booleans(),
)
crs_prefixes = st.one_of(
    st.just(""),
    st.integers(min_value=-5, max_value=10**6).map(lambda n: f"EPSG:{n};"),
    st.text(max_size=10).map(lambda t: f"EPSG:{t};"),
)
texts = st.one_of(
    bboxes,
    st.builds(str.__add__, crs_prefixes, wkt),
    st.text(max_size=40).filter(lambda t: "://" not in t),  # never a URL: tests stay offline
)

coordinates = st.recursive(
    st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=20,
)
geometries = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["Polygon", "MultiPolygon", "Point", "LineString", "GeometryCollection", "Nope"]
        ),
        "coordinates": coordinates,
    }
)
features = st.fixed_dictionaries(
    {"type": st.just("Feature"), "geometry": geometries | st.none(), "properties": values}
)
documents = st.one_of(
    st.fixed_dictionaries({"type": st.just("FeatureCollection"), "features": st.lists(features)}),
    features,
    geometries,
    values,
)


def _load_file(doc: object) -> object:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "roi.geojson"
        path.write_text(json.dumps(doc))
        return load_roi(path)


@pytest.mark.parametrize("budget", BUDGETS)
def test_roi_text(budget: int) -> None:
    fuzz(texts, load_roi, budget)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # GDAL's notes on malformed GeoJSON
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("budget", BUDGETS)
def test_roi_geojson_file(budget: int) -> None:
    fuzz(documents, _load_file, budget)
