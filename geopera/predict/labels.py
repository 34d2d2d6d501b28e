"""``geopera predict classification``: one label per chip, as GeoParquet.

The raster is cut into a regular grid of non-overlapping chips of the model's chip size, from
the top-left corner of the ROI's window; a chip is labelled when at least half of its pixels are
valid (not nodata, inside the raster) and its centre is inside the ROI. Each row holds the
chip's footprint (in the raster's CRS), its class name and value, the class probability
(``score``) and its pixel origin (``row``, ``col``).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geopera.core.devices import resolve_device
from geopera.core.outputs import atomic_file
from geopera.data.labelled.labels import Grid
from geopera.data.labelled.windows import RasterInput, bounded_gdal_cache, read_strip, roi_window
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.predict.checks import check_inputs, close_inputs, written_by
from geopera.predict.request import PredictRequest, PredictSummary
from geopera.predict.tiled import PredictError, open_inputs, scratch_output


@dataclass
class ChipLabels:
    """Labelled chips of a raster, in raster pixels.

    Attributes:
        origins: (row, col) of each chip's top-left pixel.
        best: Class index of each chip.
        scores: Its probability.
    """

    origins: list[tuple[int, int]] = field(default_factory=list)
    best: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def label_chips(
    task: FinetuneTask, opened: list[RasterInput], window: Any, tile: int, batch_size: int
) -> ChipLabels:
    """Every chip's class inside ``window``, ``batch_size`` chips per forward pass."""
    r0, c0 = int(window.row_off), int(window.col_off)
    rows = range(r0, r0 + int(window.height), tile)
    cols = range(c0, c0 + int(window.width), tile)
    origins = [(r, c) for r in rows for c in cols]
    device = next(task.parameters()).device
    found = ChipLabels()
    for start in range(0, len(origins), batch_size):
        chunk = origins[start : start + batch_size]
        reads = [read_strip(opened, r, c, tile, tile) for r, c in chunk]
        keep = [i for i, (_, bad) in enumerate(reads) if bad.mean() <= 0.5]
        if not keep:
            continue
        batch = torch.from_numpy(np.stack([reads[i][0][0] for i in keep])).to(device)
        with torch.no_grad():
            probs = task.predict_chips({"image": batch}).float().cpu()  # (B, K)
        score, best = probs.max(1)
        found.origins += [chunk[i] for i in keep]
        found.best += best.tolist()
        found.scores += score.tolist()
    return found


def inside(labels: ChipLabels, geom: Any, grid: Grid, tile: int) -> ChipLabels:
    """The chips whose centre is inside the ROI (all of them without one)."""
    if geom is None or not labels.origins:
        return labels
    from shapely import contains_xy

    rows, cols = np.array(labels.origins, dtype=np.float64).T + tile / 2  # chip centres
    x, y = grid.transform @ (cols, rows)
    keep = np.flatnonzero(contains_xy(geom, x, y)).tolist()
    return ChipLabels(
        [labels.origins[i] for i in keep],
        [labels.best[i] for i in keep],
        [labels.scores[i] for i in keep],
    )


def write_labels(labels: ChipLabels, task: FinetuneTask, grid: Grid, tile: int, out: Path) -> int:
    """Write the chips as GeoParquet (atomically); returns the chips written."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    t = grid.transform
    footprints = [
        Polygon([t @ (c, r), t @ (c + tile, r), t @ (c + tile, r + tile), t @ (c, r + tile)])
        for r, c in labels.origins
    ]
    names = task.class_names()
    frame = gpd.GeoDataFrame(
        {
            "label": [names[i] for i in labels.best],
            "value": [task.spec.classes[i] for i in labels.best],
            "score": labels.scores,
            "row": [r for r, _ in labels.origins],
            "col": [c for _, c in labels.origins],
        },
        geometry=footprints,
        crs=grid.crs,
    )
    with atomic_file(out) as tmp:
        frame.to_parquet(tmp)
    return len(frame)


@bounded_gdal_cache
def predict_labels(task: FinetuneTask, request: PredictRequest) -> PredictSummary:
    """The predict writer of classification (see the module docstring)."""
    r = request
    written_by(task.spec, predict_labels)
    check_inputs(task.spec, r.inputs)
    if r.output.suffix.lower() != ".parquet":
        raise PredictError(f"--output {r.output} must end in .parquet (GeoParquet of chips)")
    if r.ranks > 1 or r.probabilities is not None:
        raise PredictError("classification runs on one device and writes no --probabilities")
    scratch_output(r.output, r.overwrite)
    task = task.to(resolve_device(r.device)).eval()
    tile = int(task.spec.chip_size)
    grid, opened = open_inputs(r.inputs, task.spec, r.band_map)
    try:
        window, geom = roi_window(grid, load_roi(r.roi) if r.roi else None)
        labels = inside(label_chips(task, opened, window, tile, r.batch_size), geom, grid, tile)
    finally:
        close_inputs(opened)
    count = write_labels(labels, task, grid, tile, r.output)
    return PredictSummary(r.output, objects=count, message=f"wrote {count} chips to {r.output}")
