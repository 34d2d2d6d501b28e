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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from geopera.core.contracts import FinetunedSpec
from geopera.core.devices import resolve_device
from geopera.core.outputs import full_disk_errors
from geopera.core.pipeline import BackgroundWriter, overlap_pays
from geopera.data.labelled.windows import RasterInput, bounded_gdal_cache, roi_window
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.finetune.checkpoint import load_finetuned
from geopera.predict.dense import ClassCoding, DenseOutputs, to_cog
from geopera.predict.detection import detect_tiles, merge, write_boxes
from geopera.predict.tiled import (
    PredictError,
    dense_blocks,
    open_inputs,
    scratch_output,
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


def _tiling(spec: FinetunedSpec, overlap: int | None) -> tuple[int, int]:
    """Tile size (the chip size) and overlap (default: a quarter of it)."""
    tile = int(spec.chip_size)
    overlap = tile // 4 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise PredictError(
            f"--overlap must be in [0, {tile - 1}] for {tile} px tiles, got {overlap}"
        )
    return tile, overlap


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
    band_map: dict[str, str] | None = None,
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
        band_map: ``--bands`` pairs (model band or common name -> raster band), or None.

    Returns:
        The summary.

    Raises:
        PredictError: If the inputs do not fit the model.
    """
    task = _load(model)
    spec = task.spec
    _check_dense_inputs(spec, inputs)
    tmp = scratch_output(output, overwrite)
    tmp_probs = scratch_output(probabilities, overwrite) if probabilities else None
    dev = resolve_device(device)
    task = task.to(dev).eval()
    tile, overlap = _tiling(spec, overlap)
    grid, opened = open_inputs(inputs, spec, band_map)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    coding = ClassCoding.of(spec.classes)
    threads = overlap_pays(dev) if pipeline is None else pipeline
    try:
        with (
            full_disk_errors(tmp, tmp_probs),
            DenseOutputs(tmp, tmp_probs, opened[0].dataset, coding) as outputs,
        ):
            k = len(coding.values)
            sizes = (tile, overlap, k, batch_size, band_width)
            blocks = dense_blocks(
                _chip_model(task), opened, window, geom, grid.transform, *sizes, dev, threads
            )
            with BackgroundWriter(enabled=threads) as writer:
                for block in blocks:
                    writer.submit(outputs.write, block)
            outputs.finish(spec)
        to_cog(tmp, output)
        if tmp_probs is not None and probabilities is not None:
            to_cog(tmp_probs, probabilities)
    finally:
        _close(opened, tmp, tmp_probs)
    return PredictSummary(output, probabilities, pixels=outputs.pixels)


def _check_dense_inputs(spec: FinetunedSpec, inputs: list[str]) -> None:
    """A segmentation model takes one raster, a change model two dates."""
    expected = 2 if spec.task == "change" else 1
    if spec.task == "detection" or len(inputs) != expected:
        raise PredictError(
            f"the model is a {spec.task} model; it needs "
            + ("--input and --after" if spec.task == "change" else "one --input")
        )


def _load(model: str | os.PathLike[str] | FinetuneTask) -> FinetuneTask:
    return model if isinstance(model, FinetuneTask) else load_finetuned(model)


def _chip_model(task: FinetuneTask) -> Callable[[Tensor], Tensor]:
    """The model over tiles: (B, N, C, T, T) raw (N dates) -> (B, K, T, T) probabilities."""

    def run(batch: Tensor) -> Tensor:
        sample = {"image": batch[:, 0]}
        if batch.shape[1] > 1:
            sample["after"] = batch[:, 1]
        out: Tensor = task.predict_chips(sample)
        return out

    return run


def _close(opened: list[RasterInput], *scratch: Path | None) -> None:
    """Close the inputs and remove scratch files left by a failure."""
    for inp in opened:
        inp.dataset.close()
    for path in scratch:
        if path is not None and path.exists():
            path.unlink()


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
    task = _load(model)
    spec = task.spec
    if spec.task != "detection":
        raise PredictError(f"the model is a {spec.task} model, not a detection model")
    scratch_output(output, overwrite)
    task = task.to(resolve_device(device)).eval()
    tiling = _tiling(spec, overlap)
    grid, opened = open_inputs([image], spec, band_map)
    window, geom = roi_window(grid, load_roi(roi) if roi else None)
    try:
        found = detect_tiles(task, opened, window, tiling, batch_size, min_score)
    finally:
        _close(opened)
    kept = merge(found, iou, geom, grid.transform)
    return PredictSummary(output, objects=write_boxes(kept, spec, grid, output))
