"""Web-map tiles of a raster layer, read with rio-tiler from the COG's overviews.

A tile outside the layer's bounds is a transparent PNG, not an error: a web map asks for every
tile of its view.
"""

from functools import cache

import numpy as np
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.utils import render

from geopera.view.layers import Layer

TILE = 256


@cache
def empty_tile() -> bytes:
    """A transparent 256 px PNG."""
    return render(np.zeros((4, TILE, TILE), dtype=np.uint8), img_format="PNG")


def tile_png(layer: Layer, z: int, x: int, y: int) -> bytes:
    """The PNG of tile ``z/x/y`` (web mercator) of a raster layer.

    Args:
        layer: A raster layer (with a style).
        z: Zoom.
        x: Column.
        y: Row.

    Returns:
        PNG bytes (transparent outside the raster).
    """
    if layer.style is None:
        raise ValueError(f"{layer.name} is a vector layer: it has no tiles")
    style = layer.style
    try:
        with Reader(str(layer.path)) as src:
            if not src.tile_exists(x, y, z):
                return empty_tile()
            image = src.tile(x, y, z, tilesize=TILE, indexes=style.indexes,
                             resampling_method=style.resampling)  # fmt: skip
    except TileOutsideBounds:
        return empty_tile()
    valid = image.mask > 0  # (H, W)
    rgba = style.rgba(np.asarray(image.data), valid)  # (4, H, W) uint8
    return render(rgba[:3], mask=rgba[3], img_format="PNG")
