"""``geopera predict regression``: a float32 COG of predicted values on the input's grid.

Tiles overlap and are blended as for segmentation (:func:`geopera.predict.tiled.dense_blocks`,
one channel instead of class probabilities); pixels without a prediction (nodata, outside the
ROI) are NaN, the COG's nodata.
"""

import math
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from torch import Tensor

from geopera.core.devices import resolve_device
from geopera.core.outputs import full_disk_errors
from geopera.core.pipeline import GDAL_IO, BackgroundWriter, overlap_pays
from geopera.data.labelled.windows import bounded_gdal_cache, roi_window
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.predict.checks import check_inputs, close_inputs, tiling, written_by
from geopera.predict.dense import grid_profile, to_cog
from geopera.predict.request import PredictRequest, PredictSummary
from geopera.predict.tiled import (
    DenseBlock,
    PredictError,
    dense_blocks,
    open_inputs,
    scratch_output,
)


class ValueOutput:
    """The value raster being written, block by block.

    Args:
        path: Scratch GeoTIFF path.
        grid_src: The input dataset whose grid it takes.
    """

    def __init__(self, path: Path, grid_src: Any) -> None:
        self.pixels = 0
        self.dst = rasterio.open(path, "w", **grid_profile(grid_src, 1, "float32", math.nan))

    def __enter__(self) -> "ValueOutput":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.dst.close()

    def write(self, block: DenseBlock) -> None:
        """Write one block's values (NaN where nothing was predicted)."""
        values = np.where(block.valid, block.probs[0], np.nan).astype(np.float32)  # (h, w)
        h, w = values.shape
        with GDAL_IO:  # not while a reader thread reads (see GDAL_IO)
            self.dst.write(values[None], window=Window(block.col, block.row, w, h))
        self.pixels += int(block.valid.sum())


def _tiles(task: FinetuneTask) -> Any:
    """The model over tiles: (B, 1, C, T, T) raw -> (B, 1, T, T) values."""

    def run(batch: Tensor) -> Tensor:
        out: Tensor = task.predict_chips({"image": batch[:, 0]})
        return out

    return run


@bounded_gdal_cache
def predict_values(task: FinetuneTask, request: PredictRequest) -> PredictSummary:
    """The predict writer of regression (see the module docstring)."""
    r, spec = request, task.spec
    written_by(spec, predict_values)
    check_inputs(spec, r.inputs)
    if r.ranks > 1 or r.probabilities is not None:
        raise PredictError("regression runs on one device and writes no --probabilities")
    tmp = scratch_output(r.output, r.overwrite)
    device = resolve_device(r.device)
    task = task.to(device).eval()
    tile, overlap = tiling(spec, r.overlap)
    grid, opened = open_inputs(r.inputs, spec, r.band_map)
    threads = overlap_pays(device)
    try:
        window, geom = roi_window(grid, load_roi(r.roi) if r.roi else None)
        with full_disk_errors(tmp), ValueOutput(tmp, opened[0].dataset) as out:
            sizes = (tile, overlap, 1, r.batch_size, r.band_width)
            blocks = dense_blocks(
                _tiles(task), opened, window, geom, grid.transform, *sizes, device, threads
            )
            with BackgroundWriter(enabled=threads) as writer:
                for block in blocks:
                    writer.submit(out.write, block)
            out.dst.update_tags(geopera_model=str(spec.weights), task=spec.task,
                                geopera_kind="values", target=task.value_name())  # fmt: skip
        to_cog(tmp, r.output)
    finally:
        close_inputs(opened, tmp)
    message = f"wrote {r.output} ({out.pixels} pixels predicted, float32 COG, nodata NaN)"
    return PredictSummary(r.output, pixels=out.pixels, message=message)
