"""``geopera predict``: a fine-tuned model over whole rasters, georeferenced outputs.

* segmentation / change: a Cloud-Optimised GeoTIFF of class values (the label values the model
  was trained on; change: 0/1) on the input's grid (CRS, transform, size), nodata 255 (or -1
  for class values above 254); optionally a second COG of class probabilities (uint8, 0-254 =
  0-1, nodata 255, one band per class, band scale 1/254).
* detection: boxes in map coordinates (GeoPackage or GeoJSON, by suffix) with ``label`` and
  ``score``, merged across tiles by class-wise non-maximum suppression.

Reading, the model and writing overlap: strips are read by a reader thread ahead of the model,
and blocks are classified and written by a writer thread behind it (:mod:`geopera.core.pipeline`;
bounded queues, so memory stays flat in the raster's size). Outputs are written to a hidden
temporary file and renamed into place when complete.
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from rasterio.windows import Window
from torch import Tensor
from torchvision.ops import batched_nms

from geopera.core.contracts import FinetunedSpec
from geopera.core.devices import resolve_device
from geopera.core.outputs import atomic_file, full_disk_errors
from geopera.core.pipeline import BackgroundWriter, overlap_pays
from geopera.data.labelled.labels import apply_affine
from geopera.data.labelled.windows import bounded_gdal_cache, read_strip, roi_window
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.finetune.checkpoint import load_finetuned
from geopera.predict.tiled import (
    DenseBlock,
    PredictError,
    dense_blocks,
    open_inputs,
    scratch_output,
    tile_origins,
)


@dataclass
class PredictSummary:
    """What ``predict`` wrote.

    Attributes:
        output: Main output file.
        probabilities: Probability raster, if written.
        pixels: Pixels with a prediction (dense tasks).
        objects: Boxes written (detection).
    """

    output: Path
    probabilities: Path | None = None
    pixels: int = 0
    objects: int = 0


def _profile(grid_src: Any, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    return {
        "driver": "GTiff",
        "width": grid_src.width,
        "height": grid_src.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": grid_src.crs,
        "transform": grid_src.transform,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "IF_SAFER",
    }


def _to_cog(tmp: Path, output: Path) -> None:
    # single-threaded compression: NUM_THREADS=ALL_CPUS costs ~70 MB of buffers
    with atomic_file(output) as cog:
        rasterio.shutil.copy(tmp, cog, driver="COG", compress="DEFLATE", BIGTIFF="IF_SAFER")


def _tiling(spec: FinetunedSpec, overlap: int | None) -> tuple[int, int]:
    """Tile size (the chip size) and overlap (default: a quarter of it)."""
    tile = int(spec.chip_size)
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise PredictError(
            f"--overlap must be in [0, {tile - 1}] for {tile} px tiles, got {overlap}"
        )
    return tile, overlap


def _write_block(
    block: DenseBlock, values: np.ndarray, dtype: str, nodata: float, dst: Any, probs_dst: Any
) -> int:
    """Write one block's classes (and probabilities); return its pixels with a prediction."""
    h, w = block.valid.shape
    best = block.probs.argmax(0)  # (K, h, w) -> (h, w); numpy is 8x torch here
    classes = values[best].astype(dtype)
    classes[~block.valid] = nodata
    win = Window(block.col, block.row, w, h)
    dst.write(classes[None], window=win)
    if probs_dst is not None:
        scaled = np.round(block.probs * 254).astype(np.uint8)
        scaled[:, ~block.valid] = 255
        probs_dst.write(scaled, window=win)
    return int(block.valid.sum())


@bounded_gdal_cache
def predict_dense(
    model: str | os.PathLike[str] | FinetuneTask,
    inputs: list[str],
    output: Path,
    roi: str | None = None,
    overlap: int | None = None,
    probabilities: Path | None = None,
    batch_size: int = 8,
    band_width: int = 2048,
    device: str = "auto",
    overwrite: bool = False,
    pipeline: bool | None = None,
) -> PredictSummary:
    """Segmentation or change map of whole rasters (see the module docstring).

    GDAL's block cache is capped at :data:`geopera.data.labelled.windows.GDAL_CACHE_MB` so that
    memory stays flat in the raster's size.

    Args:
        model: ``model.ckpt`` of ``geopera finetune segmentation|change`` (or the loaded task).
        inputs: One raster (segmentation) or two dates (change).
        output: Class COG path.
        roi: Optional ROI (vector file, WKT or bbox); outside it the output is nodata.
        overlap: Tile overlap in pixels (default: a quarter of the chip size).
        probabilities: Optional probability COG path.
        batch_size: Tiles per forward pass.
        band_width: Columns processed at once (memory knob).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        overwrite: Replace existing outputs.
        pipeline: Reader and writer threads beside the model (None: where they pay, see
            :func:`geopera.core.pipeline.overlap_pays`).

    Returns:
        The summary.

    Raises:
        PredictError: If the inputs do not fit the model.
    """
    task = model if isinstance(model, FinetuneTask) else load_finetuned(model)
    spec = task.spec
    expected = 2 if spec.task == "change" else 1
    if spec.task == "detection" or len(inputs) != expected:
        raise PredictError(
            f"the model is a {spec.task} model; it needs "
            + ("--input and --after" if spec.task == "change" else "one --input")
        )
    tmp = scratch_output(output, overwrite)
    tmp_probs = scratch_output(probabilities, overwrite) if probabilities else None
    dev = resolve_device(device)
    task = task.to(dev).eval()
    tile, overlap = _tiling(spec, overlap)
    grid, opened = open_inputs(inputs, spec)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    values = np.asarray(spec.classes)
    small = values.min() >= 0 and values.max() <= 254
    dtype, nodata = ("uint8", 255) if small else ("int32", -(2**31))

    def run(batch: Tensor) -> Tensor:  # (B, N, C, T, T) raw -> (B, K, T, T)
        sample = {"image": batch[:, 0]}
        if batch.shape[1] > 1:
            sample["after"] = batch[:, 1]
        out: Tensor = task.predict_chips(sample)
        return out

    pixels = 0
    k = len(values)
    ref = opened[0].dataset
    try:
        with (
            full_disk_errors(tmp, tmp_probs),
            rasterio.open(tmp, "w", **_profile(ref, 1, dtype, nodata)) as dst,
        ):
            probs_dst = (
                rasterio.open(tmp_probs, "w", **_profile(ref, k, "uint8", 255))
                if tmp_probs
                else None
            )
            written = [0]

            def write(block: DenseBlock) -> None:  # in the writer thread
                written[0] += _write_block(block, values, dtype, nodata, dst, probs_dst)

            try:
                threads = overlap_pays(dev) if pipeline is None else pipeline
                with BackgroundWriter(enabled=threads) as writer:
                    for block in dense_blocks(
                        run, opened, window, geom, grid.transform, tile, overlap, k,
                        batch_size, band_width, dev, threads,
                    ):  # fmt: skip
                        writer.submit(write, block)
                pixels = written[0]
                dst.update_tags(geopera_model=str(spec.weights), task=spec.task)
                if probs_dst is not None:
                    probs_dst.scales = [1 / 254] * k
                    probs_dst.descriptions = [f"class {v}" for v in values.tolist()]
            finally:
                if probs_dst is not None:
                    probs_dst.close()
        _to_cog(tmp, output)
        if tmp_probs is not None and probabilities is not None:
            _to_cog(tmp_probs, probabilities)
    finally:
        for inp in opened:
            inp.dataset.close()
        for scratch in (tmp, tmp_probs):
            if scratch is not None and scratch.exists():
                scratch.unlink()
    return PredictSummary(output, probabilities, pixels=pixels)


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

    Returns:
        The summary.
    """
    import geopandas as gpd
    from shapely import contains_xy
    from shapely.geometry import box

    suffix = output.suffix.lower()
    if suffix not in (".gpkg", ".geojson", ".json"):
        raise PredictError(f"--output {output} must end in .gpkg or .geojson for boxes")
    task = model if isinstance(model, FinetuneTask) else load_finetuned(model)
    spec = task.spec
    if spec.task != "detection":
        raise PredictError(f"the model is a {spec.task} model, not a detection model")
    scratch_output(output, overwrite)
    dev = resolve_device(device)
    task = task.to(dev).eval()
    tile, overlap = _tiling(spec, overlap)
    grid, opened = open_inputs([image], spec)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    found_boxes, found_scores, found_labels = [], [], []
    try:
        for y in tile_origins(r0, r1, tile, tile - overlap):
            for x0 in range(0, len(xs := tile_origins(c0, c1, tile, tile - overlap)), batch_size):
                chunk = xs[x0 : x0 + batch_size]
                strips = [read_strip(opened, y, x, tile, tile) for x in chunk]
                keep = [i for i, (_, bad) in enumerate(strips) if not bad.all()]
                if not keep:
                    continue
                batch = torch.from_numpy(np.stack([strips[i][0][0] for i in keep])).to(dev)
                with torch.no_grad():
                    preds = task.predict_chips({"image": batch})
                for i, pred in zip(keep, preds, strict=True):
                    b, sc = pred["boxes"].float().cpu(), pred["scores"].float().cpu()
                    bad = torch.from_numpy(strips[i][1])  # (T, T) nodata of this tile
                    cx = ((b[:, 0] + b[:, 2]) / 2).long().clamp(0, tile - 1)
                    cy = ((b[:, 1] + b[:, 3]) / 2).long().clamp(0, tile - 1)
                    ok = (sc >= min_score) & ~bad[cy, cx]  # boxes centred on nodata are dropped
                    offset = torch.tensor([chunk[i], y, chunk[i], y], dtype=torch.float32)
                    found_boxes.append(b[ok] + offset)
                    found_scores.append(sc[ok])
                    found_labels.append(pred["labels"].cpu()[ok])
    finally:
        opened[0].dataset.close()
    boxes = torch.cat(found_boxes) if found_boxes else torch.zeros(0, 4)
    scores = torch.cat(found_scores) if found_scores else torch.zeros(0)
    labels = torch.cat(found_labels) if found_labels else torch.zeros(0, dtype=torch.int64)
    kept = (
        batched_nms(boxes, scores, labels, iou) if len(boxes) else torch.zeros(0, dtype=torch.int64)
    )
    boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    centres = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    if geom is not None:  # centres on nodata were dropped per tile; now the ROI
        mx, my = apply_affine(grid.transform, centres[:, 0].numpy(), centres[:, 1].numpy())
        inside = torch.from_numpy(contains_xy(geom, mx, my))
        boxes, scores, labels = boxes[inside], scores[inside], labels[inside]
    t = grid.transform
    geoms = []
    for x0_, y0_, x1_, y1_ in boxes.tolist():
        ax, ay = t * (x0_, y0_)
        bx, by = t * (x1_, y1_)
        geoms.append(box(min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)))
    names = [str(spec.classes[int(i) - 1]) for i in labels.tolist()]
    frame = gpd.GeoDataFrame(
        {"label": names, "score": scores.tolist()}, geometry=geoms, crs=grid.crs
    )
    driver = "GPKG" if suffix == ".gpkg" else "GeoJSON"
    with atomic_file(output) as tmp:
        if driver == "GPKG":
            frame.to_file(tmp, driver=driver, layer=output.stem)
        else:
            frame.to_file(tmp, driver=driver)
    return PredictSummary(output, objects=len(frame))
