"""Detection over whole rasters: tiles through the model, boxes merged across tiles, written.

Boxes are found per tile (pixel coordinates of the raster), dropped when their centre lies on
nodata, merged across tiles by class-wise non-maximum suppression, kept inside the ROI, and
written in map coordinates.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from affine import Affine
from torch import Tensor
from torchvision.ops import batched_nms

from geopera.core.contracts import FinetunedSpec
from geopera.core.devices import resolve_device
from geopera.core.outputs import atomic_file
from geopera.data.labelled.labels import apply_affine
from geopera.data.labelled.windows import (
    RasterInput,
    bounded_gdal_cache,
    read_strip,
    roi_window,
)
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.predict.checks import check_inputs, close_inputs, load_task, tiling, written_by
from geopera.predict.request import PredictRequest, PredictSummary
from geopera.predict.tiled import PredictError, open_inputs, scratch_output, tile_origins


@dataclass
class Boxes:
    """Boxes in raster pixel coordinates.

    Attributes:
        xyxy: (N, 4) float32 boxes.
        scores: (N,) scores.
        labels: (N,) int64 class indices (1-based, as the detector's).
    """

    xyxy: Tensor
    scores: Tensor
    labels: Tensor

    @classmethod
    def cat(cls, parts: list["Boxes"]) -> "Boxes":
        """All parts' boxes (none: an empty set)."""
        if not parts:
            return cls(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
        return cls(
            *(torch.cat([getattr(p, f) for p in parts]) for f in ("xyxy", "scores", "labels"))
        )

    def __getitem__(self, keep: Tensor) -> "Boxes":
        return Boxes(self.xyxy[keep], self.scores[keep], self.labels[keep])

    def centres(self) -> Tensor:
        """(N, 2) box centres (x, y)."""
        return torch.stack(
            [(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, (self.xyxy[:, 1] + self.xyxy[:, 3]) / 2], 1
        )


def _tile_boxes(
    pred: dict[str, Tensor], invalid: np.ndarray, x: int, y: int, tile: int, min_score: float
) -> Boxes:
    """One tile's boxes above ``min_score`` whose centre is valid, moved to raster pixels."""
    b, sc = pred["boxes"].float().cpu(), pred["scores"].float().cpu()
    bad = torch.from_numpy(invalid)  # (T, T) nodata of this tile
    cx = ((b[:, 0] + b[:, 2]) / 2).long().clamp(0, tile - 1)
    cy = ((b[:, 1] + b[:, 3]) / 2).long().clamp(0, tile - 1)
    ok = (sc >= min_score) & ~bad[cy, cx]  # boxes centred on nodata are dropped
    offset = torch.tensor([x, y, x, y], dtype=torch.float32)
    return Boxes(b[ok] + offset, sc[ok], pred["labels"].cpu()[ok])


def detect_tiles(
    task: FinetuneTask,
    opened: list[RasterInput],
    window: Any,
    tiling: tuple[int, int],
    batch_size: int,
    min_score: float,
) -> Boxes:
    """Every tile's boxes inside ``window``, before merging.

    Args:
        task: The detection model, on its device.
        opened: The input raster.
        window: The ROI's window on the raster.
        tiling: Tile size and overlap in pixels.
        batch_size: Tiles per forward pass.
        min_score: Lowest score kept.

    Returns:
        The boxes, in raster pixel coordinates.
    """
    tile, overlap = tiling
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    xs = tile_origins(c0, c1, tile, tile - overlap)
    device = next(task.parameters()).device
    found = []
    for y in tile_origins(r0, r1, tile, tile - overlap):
        for start in range(0, len(xs), batch_size):
            chunk = xs[start : start + batch_size]
            strips = [read_strip(opened, y, x, tile, tile) for x in chunk]
            keep = [i for i, (_, bad) in enumerate(strips) if not bad.all()]
            if not keep:
                continue
            batch = torch.from_numpy(np.stack([strips[i][0][0] for i in keep])).to(device)
            with torch.no_grad():
                preds = task.predict_chips({"image": batch})
            for i, pred in zip(keep, preds, strict=True):
                found.append(_tile_boxes(pred, strips[i][1], chunk[i], y, tile, min_score))
    return Boxes.cat(found)


def merge(boxes: Boxes, iou: float, geom: Any, transform: Affine) -> Boxes:
    """Merge overlapping boxes of a class (NMS across tiles) and keep those inside the ROI.

    Args:
        boxes: Every tile's boxes.
        iou: IoU above which boxes of one class are merged.
        geom: The ROI in the raster's CRS, or None.
        transform: The raster's affine transform.

    Returns:
        The kept boxes.
    """
    if len(boxes.xyxy) == 0:
        return boxes
    boxes = boxes[batched_nms(boxes.xyxy, boxes.scores, boxes.labels, iou)]
    if geom is not None:  # centres on nodata were dropped per tile; now the ROI
        from shapely import contains_xy

        centres = boxes.centres()
        mx, my = apply_affine(transform, centres[:, 0].numpy(), centres[:, 1].numpy())
        boxes = boxes[torch.from_numpy(contains_xy(geom, mx, my))]
    return boxes


def write_boxes(boxes: Boxes, spec: FinetunedSpec, grid: Any, output: Path) -> int:
    """Write boxes in map coordinates with ``label`` and ``score`` (GeoPackage or GeoJSON).

    Args:
        boxes: The kept boxes.
        spec: The model (class values).
        grid: The raster's grid (transform, CRS).
        output: ``.gpkg`` or ``.geojson`` path, written atomically.

    Returns:
        The number of boxes written.
    """
    import geopandas as gpd
    from shapely.geometry import box

    t = grid.transform
    geoms = []
    for x0, y0, x1, y1 in boxes.xyxy.tolist():
        ax, ay = t @ (x0, y0)
        bx, by = t @ (x1, y1)
        geoms.append(box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)))
    names = [str(spec.classes[int(i) - 1]) for i in boxes.labels.tolist()]
    frame = gpd.GeoDataFrame(
        {"label": names, "score": boxes.scores.tolist()}, geometry=geoms, crs=grid.crs
    )
    gpkg = output.suffix.lower() == ".gpkg"
    with atomic_file(output) as tmp:
        if gpkg:
            frame.to_file(tmp, driver="GPKG", layer=output.stem)
        else:
            frame.to_file(tmp, driver="GeoJSON")
    return len(frame)


@bounded_gdal_cache
def predict_detection(
    model: str | os.PathLike[str] | FinetuneTask,
    image: str,
    output: Path,
    roi: str | None = None,
    overlap: int | None = None,
    min_score: float = 0.5,
    iou: float = 0.5,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    band_map: dict[str, str] | None = None,
) -> PredictSummary:
    """Boxes over a whole raster, in map coordinates (see the module docstring).

    GDAL's block cache is capped at :data:`geopera.data.labelled.windows.GDAL_CACHE_MB`.

    Args:
        model: ``model.ckpt`` of ``geopera finetune detection`` (or the loaded task).
        image: Input raster.
        output: ``.gpkg`` or ``.geojson`` path.
        roi: Optional ROI; boxes whose centre is outside it (or on nodata) are dropped.
        overlap: Tile overlap (default: a quarter of the chip size).
        min_score: Lowest score kept.
        iou: IoU above which overlapping boxes of one class are merged (cross-tile NMS).
        batch_size: Tiles per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        overwrite: Replace an existing output.
        band_map: ``--bands`` pairs (model band or common name -> raster band), or None.

    Returns:
        The summary.
    """
    if output.suffix.lower() not in (".gpkg", ".geojson", ".json"):
        raise PredictError(f"--output {output} must end in .gpkg or .geojson for boxes")
    task = load_task(model)
    spec = task.spec
    written_by(spec, predict_boxes)
    check_inputs(spec, [image])
    scratch_output(output, overwrite)
    task = task.to(resolve_device(device)).eval()
    tiles = tiling(spec, overlap)
    grid, opened = open_inputs([image], spec, band_map)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    try:
        found = detect_tiles(task, opened, window, tiles, batch_size, min_score)
    finally:
        close_inputs(opened)
    kept = merge(found, iou, geom, grid.transform)
    return PredictSummary(output, objects=write_boxes(kept, spec, grid, output))


def predict_boxes(task: FinetuneTask, request: PredictRequest) -> PredictSummary:
    """The predict writer of detection: :func:`predict_detection`, on one device."""
    r = request
    if r.ranks > 1:
        raise PredictError(f"{task.spec.task} runs on one device; --devices is for dense tasks")
    summary = predict_detection(
        task, r.inputs[0], r.output, roi=r.roi, overlap=r.overlap, min_score=r.min_score,
        iou=r.nms_iou, batch_size=r.batch_size, device=r.device, overwrite=r.overwrite,
        band_map=r.band_map,
    )  # fmt: skip
    summary.message = f"wrote {summary.objects} boxes to {summary.output}"
    return summary
