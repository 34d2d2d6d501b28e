"""Query points of ``geopera embed similar``: WKT geometries in any CRS, chip ids, nonsense."""

from pathlib import Path

import pytest
import rasterio
from hypothesis import strategies as st

from geopera.core.contracts import EmbeddingSet
from geopera.embed.similar import query_vector
from tests.conftest import EMBEDDED_SCENE as SCENE
from tests.fuzz.conftest import BUDGETS, fuzz


def _queries(
    bounds: tuple[float, float, float, float],
) -> st.SearchStrategy[tuple[str, str | None]]:
    left, bottom, right, top = bounds
    xs = st.floats(left - 2000, right + 2000) | st.floats(allow_nan=True, allow_infinity=True)
    ys = st.floats(bottom - 2000, top + 2000) | st.floats(allow_nan=True, allow_infinity=True)
    points = st.builds(lambda x, y: f"POINT({x} {y})", xs, ys)
    boxes = st.builds(
        lambda x, y, w: f"POLYGON(({x} {y}, {x + w} {y}, {x + w} {y + w}, {x} {y}))", xs, ys, xs
    )
    chip_ids = st.builds(
        lambda name, r, c: f"{name}:{r}:{c}",
        st.sampled_from([Path(SCENE).stem, "other"]),
        st.integers(-2, 9),
        st.integers(-2, 9),
    )
    texts = st.text(max_size=30) | st.sampled_from(["POINT()", "POINT(1)", "LINESTRING(0 0, 1 1)"])
    crs = st.none() | st.sampled_from(["EPSG:4326", "EPSG:3857", "EPSG:0", "nonsense", ""])
    return st.tuples(points | boxes | chip_ids | texts, crs)


@pytest.mark.parametrize("budget", BUDGETS)
def test_similar_queries(embedded: Path, budget: int) -> None:
    with rasterio.open(embedded / f"{Path(SCENE).stem}.tif") as ds:
        bounds = tuple(ds.bounds)

    manifest = EmbeddingSet.read(embedded / EmbeddingSet.FILE)

    def run(case: tuple[str, str | None]) -> object:
        query, crs = case  # what `similar` does with --query and --crs before it writes
        return query_vector(manifest, embedded, query, crs)

    fuzz(_queries(bounds), run, budget)  # type: ignore[arg-type]
