"""``geopera embed similar`` with an area as the query: the mean of the tokens it covers."""

from pathlib import Path

import numpy as np
import pytest
import rasterio

from geopera.core.contracts import EmbeddingSet
from geopera.embed.errors import EmbedError
from geopera.embed.similar import query_vector, similar
from tests.conftest import EMBEDDED_SCENE


def test_a_polygon_query_is_the_mean_of_the_tokens_inside(embedded: Path, tmp_path: Path) -> None:
    cog = embedded / f"{Path(EMBEDDED_SCENE).stem}.tif"
    with rasterio.open(cog) as ds:
        x0, y1 = ds.xy(4, 6, offset="ul")  # tokens rows 4-5, cols 6-7: a 2 x 2 block
        x1, y0 = ds.xy(5, 7, offset="lr")
        block = ds.read(window=((4, 6), (6, 8))).astype(np.float32)  # (D, 2, 2)
    # a polygon a little inside the block's edges: it covers the four token centres only
    inset = 0.1 * (x1 - x0)
    polygon = (
        f"POLYGON(({x0 + inset} {y0 + inset}, {x1 - inset} {y0 + inset}, "
        f"{x1 - inset} {y1 - inset}, {x0 + inset} {y1 - inset}, {x0 + inset} {y0 + inset}))"
    )
    manifest = EmbeddingSet.read(embedded / EmbeddingSet.FILE)
    vector = query_vector(manifest, embedded, polygon, None)
    np.testing.assert_allclose(vector, block.reshape(block.shape[0], -1).mean(1), rtol=1e-5)
    summary = similar(embedded, polygon, tmp_path / "sim", top=2)
    assert summary.maps
    with rasterio.open(summary.maps[0]) as sim:
        values = sim.read(1)
    assert np.nanmax(values) <= 1.0 + 1e-3


def test_a_query_at_infinity_is_a_user_error(embedded: Path) -> None:
    """Found by the fuzz suite: PROJ made the ring's corners NaN and GEOS raised its own error."""
    manifest = EmbeddingSet.read(embedded / EmbeddingSet.FILE)
    for query in ("POLYGON((-inf 0, -inf 0, -inf 0, -inf 0))", "POINT(nan 1)"):
        with pytest.raises(EmbedError, match="not a finite number"):
            query_vector(manifest, embedded, query, "EPSG:3857")
