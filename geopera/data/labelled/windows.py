"""Windowed reads of input rasters for whole-raster commands (predict, embed).

Pixels that are nodata (all bands equal to the nodata value, or not finite) or past the
raster's edge are reported as invalid; reads past the edge are padded.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.windows import Window

from geopera.core.errors import ROIError
from geopera.data.labelled.labels import Grid
from geopera.data.roi import ROI

#: GDAL block cache (MB) while a command streams whole rasters; GDAL's default is 5 % of RAM,
#: which a large output fills with written blocks.
GDAL_CACHE_MB = 64


def bounded_gdal_cache[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` with GDAL's block cache capped at :data:`GDAL_CACHE_MB`."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            return func(*args, **kwargs)

    return wrapper


@dataclass
class RasterInput:
    """An opened input raster (or a second date warped onto the first one's grid)."""

    dataset: Any
    bands: list[int]
    nodata: float | None


def roi_window(grid: Grid, roi: ROI | None) -> tuple[Window, Any]:
    """The pixel window covering the ROI (whole raster without one), and the ROI geometry."""
    full = Window(0, 0, grid.width, grid.height)
    if roi is None:
        return full, None
    if grid.crs is None:
        raise ROIError("an ROI needs a georeferenced input raster")
    geom = roi.to_crs(grid.crs)
    raw = rasterio.windows.from_bounds(*geom.bounds, transform=grid.transform)
    col, row = math.floor(raw.col_off), math.floor(raw.row_off)
    win = Window(
        col,
        row,
        math.ceil(raw.col_off + raw.width) - col,
        math.ceil(raw.row_off + raw.height) - row,
    )
    try:
        win = win.intersection(full)
    except rasterio.errors.WindowError as err:
        raise ROIError(f"the ROI ({roi.origin}) does not overlap the input raster") from err
    return win, geom


def read_strip(
    inputs: list[RasterInput], row: int, col: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, h, w) float32 pixels of every input and the (h, w) invalid mask.

    Reads past the raster's edge are padded and marked invalid.
    """
    arrays: list[np.ndarray] = []
    invalid = np.zeros((height, width), dtype=bool)
    for inp in inputs:
        win = Window(col, row, width, height)
        inside = row + height <= inp.dataset.height and col + width <= inp.dataset.width
        if inside:  # a plain windowed read; boundless reads go through a (slow) VRT
            data = inp.dataset.read(inp.bands, window=win).astype(np.float32)
        else:
            data = inp.dataset.read(inp.bands, window=win, boundless=True, fill_value=0)
            data = data.astype(np.float32)
        bad = ~np.isfinite(data).all(0)
        if inp.nodata is not None:
            bad |= (data == inp.nodata).all(0)
        h_in = max(0, min(height, inp.dataset.height - row))
        w_in = max(0, min(width, inp.dataset.width - col))
        bad[h_in:, :] = True
        bad[:, w_in:] = True
        invalid |= bad
        arrays.append(np.nan_to_num(data))
    return np.stack(arrays), invalid
