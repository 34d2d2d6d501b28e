"""``geopera predict`` for the class tasks (segmentation, change): class and probability COGs.

A Cloud-Optimised GeoTIFF of class values (the label values the model was trained on; change:
0/1) on the input's grid (CRS, transform, size), nodata 255 (or -1 for class values above 254);
optionally a second COG of class probabilities (uint8, 0-254 = 0-1, nodata 255, one band per
class, band scale 1/254).

Reading, the model and writing overlap: strips are read by a reader thread ahead of the model,
and blocks are classified and written by a writer thread behind it (:mod:`geopera.core.pipeline`;
bounded queues, so memory stays flat in the raster's size). Outputs are written to a hidden
temporary file and renamed into place when complete.
"""

import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from geopera.core.contracts import FinetunedSpec
from geopera.core.devices import resolve_device
from geopera.core.outputs import full_disk_errors
from geopera.core.pipeline import BackgroundWriter, overlap_pays
from geopera.core.ranks import fabric_for, launch, launched_outside, together
from geopera.data.labelled.windows import bounded_gdal_cache, roi_window
from geopera.data.roi import load_roi
from geopera.finetune.base import FinetuneTask
from geopera.predict.checks import check_inputs, close_inputs, load_task, tiling, written_by
from geopera.predict.dense import ClassCoding, DenseOutputs, EncodedBlock, encode, to_cog
from geopera.predict.request import PredictRequest, PredictSummary
from geopera.predict.tiled import (
    DenseBlock,
    PredictError,
    column_bands,
    dense_blocks,
    open_inputs,
    scratch_output,
)

T = TypeVar("T")


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
    devices: int = 1,
    num_nodes: int = 1,
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
        devices: Processes per node sharing the column bands (:mod:`geopera.core.ranks`).
        num_nodes: Nodes (started by torchrun or SLURM).

    Returns:
        The summary.

    Raises:
        PredictError: If the inputs do not fit the model, or a rank failed (named).
    """
    if devices * num_nodes > 1 or launched_outside():
        options = (batch_size, band_width, device, overwrite, band_map)
        job = _DenseJob(_path(model), inputs, output, roi, overlap, probabilities, *options)
        return _dense_ranks(job, devices, num_nodes)
    task = load_task(model)
    spec = task.spec
    _check(spec, inputs)
    tmp = scratch_output(output, overwrite)
    tmp_probs = scratch_output(probabilities, overwrite) if probabilities else None
    dev = resolve_device(device)
    task = task.to(dev).eval()
    tile, overlap = tiling(spec, overlap)
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
            started = time.perf_counter()  # the last block is written: the COGs remain
            outputs.finish(spec, task.class_names())
        _to_cogs((tmp, output), (tmp_probs, probabilities))
    finally:
        close_inputs(opened, tmp, tmp_probs)
    finish = time.perf_counter() - started
    return PredictSummary(output, probabilities, pixels=outputs.pixels, merge_seconds=finish)


def predict_classes(task: FinetuneTask, request: PredictRequest) -> PredictSummary:
    """The predict writer of the class tasks (segmentation, change): :func:`predict_dense`."""
    r = request
    summary = predict_dense(
        r.model if r.ranks > 1 else task,  # each rank loads the model from its file
        r.inputs, r.output, roi=r.roi, overlap=r.overlap, probabilities=r.probabilities,
        batch_size=r.batch_size, band_width=r.band_width, device=r.device, overwrite=r.overwrite,
        band_map=r.band_map, devices=r.devices, num_nodes=r.num_nodes,
    )  # fmt: skip
    extra = f" and {summary.probabilities}" if summary.probabilities else ""
    summary.message = f"wrote {summary.output}{extra} ({summary.pixels} pixels predicted, COG)"
    return summary


def _chip_model(task: FinetuneTask) -> Callable[[Tensor], Tensor]:
    """The model over tiles: (B, N, C, T, T) raw (N dates) -> (B, K, T, T) probabilities."""

    def run(batch: Tensor) -> Tensor:
        sample = {"image": batch[:, 0]}
        if batch.shape[1] > 1:
            sample["after"] = batch[:, 1]
        out: Tensor = task.predict_chips(sample)
        return out

    return run


def _to_cogs(*pairs: tuple[Path | None, Path | None]) -> None:
    """Each finished scratch GeoTIFF to its output as a COG (pairs without a path are skipped)."""
    for tmp, output in pairs:
        if tmp is not None and output is not None:
            to_cog(tmp, output)


@dataclass
class _DenseJob:
    """A dense prediction as every rank needs it (pickled to spawned ranks)."""

    model: str
    inputs: list[str]
    output: Path
    roi: str | None
    overlap: int | None
    probabilities: Path | None
    batch_size: int = 8
    band_width: int = 2048
    device: str = "auto"
    overwrite: bool = False
    band_map: dict[str, str] | None = None

    @property
    def parts(self) -> Path:
        """Where the ranks leave their blocks for rank 0."""
        return self.output.with_name(f".{self.output.name}.parts")


def _path(model: str | os.PathLike[str] | FinetuneTask) -> str:
    """The model's file: each rank loads its own copy."""
    if isinstance(model, FinetuneTask):
        raise PredictError("predicting on several devices needs the model's file path")
    return str(model)


def _dense_ranks(job: _DenseJob, devices: int, num_nodes: int) -> PredictSummary:
    """Run a dense prediction on ``devices`` x ``num_nodes`` ranks; a failed rank is one line."""
    fabric = fabric_for(resolve_device(job.device), devices, num_nodes)
    result = launch(fabric, _dense_share, pickle.dumps(job), "predict")
    if isinstance(result, str):
        shutil.rmtree(job.parts, ignore_errors=True)
        raise PredictError(result)
    pixels, merge = result
    return PredictSummary(job.output, job.probabilities, pixels=pixels, merge_seconds=merge)


def _dense_share(fabric: Any, pickled: bytes) -> tuple[int, float]:
    """Predict this rank's column bands into ``job.parts``; rank 0 writes the outputs.

    Returns:
        The pixels predicted and the seconds writing took (rank 0; 0 elsewhere).
    """
    job: _DenseJob = pickle.loads(pickled)  # our own job, pickled in _dense_ranks
    rank, world = fabric.global_rank, fabric.world_size

    def step(work: Callable[[], T]) -> T:  # every rank; stopped together when one fails
        return together(fabric, work)

    step(lambda: _fresh_parts(job) if rank == 0 else None)
    task = step(lambda: load_task(job.model).to(fabric.device).eval())
    spec = task.spec
    step(lambda: _check(spec, job.inputs))
    tile, overlap = step(lambda: tiling(spec, job.overlap))
    grid, opened = step(lambda: open_inputs(job.inputs, spec, job.band_map))
    try:
        window, geom = step(lambda: roi_window(grid, load_roi(job.roi) if job.roi else None))
        k = len(ClassCoding.of(spec.classes).values)
        step(lambda: _check_bands(window, job.band_width, world))
        sizes = (tile, overlap, k, job.batch_size, job.band_width)
        blocks = dense_blocks(
            _chip_model(task), opened, window, geom, grid.transform, *sizes, fabric.device,
            None, (rank, world),
        )  # fmt: skip
        step(lambda: _save_blocks(blocks, job, ClassCoding.of(spec.classes), rank))
        template = opened[0].dataset
        started = time.perf_counter()
        pixels = step(lambda: _assemble(job, task, template) if rank == 0 else 0)
        return pixels, time.perf_counter() - started
    finally:
        close_inputs(opened)


def _check(spec: FinetunedSpec, inputs: list[str]) -> None:
    written_by(spec, predict_classes)
    check_inputs(spec, inputs)


def _check_bands(window: Any, band_width: int, world: int) -> None:
    """At least one column band per rank; bands depend on ``--band-width`` only.

    The bands (and so each forward pass's batch of tiles) are those of one process, so that
    the output is the same bit for bit: a batch of other tiles can round differently.
    """
    c0 = int(window.col_off)
    bands = len(column_bands(c0, c0 + int(window.width), band_width))
    if world > bands:
        raise PredictError(
            f"{world} processes for {bands} column band(s) of {band_width} px: give at most "
            f"{bands} --devices x --num-nodes, or a smaller --band-width"
        )


def _fresh_parts(job: _DenseJob) -> None:
    """Rank 0, first: the outputs may be written; an empty folder for the ranks' blocks."""
    scratch_output(job.output, job.overwrite)
    if job.probabilities is not None:
        scratch_output(job.probabilities, job.overwrite)
    shutil.rmtree(job.parts, ignore_errors=True)
    job.parts.mkdir(parents=True)


def _save_blocks(
    blocks: Iterator[DenseBlock], job: _DenseJob, coding: ClassCoding, rank: int
) -> None:
    """Every block of this rank, encoded as the outputs store it (uint8 where they do)."""
    for n, block in enumerate(blocks):
        enc = encode(block, coding, job.probabilities is not None)
        arrays = {"origin": np.array([enc.row, enc.col, enc.pixels]), "classes": enc.classes}
        if enc.probs is not None:
            arrays["probs"] = enc.probs
        np.savez(job.parts / f"r{rank:04d}-{n:06d}.npz", **arrays)  # type: ignore[arg-type]


def _assemble(job: _DenseJob, task: FinetuneTask, template: Any) -> int:
    """Rank 0: every rank's blocks into the class (and probability) COGs, then clean up."""
    tmp = scratch_output(job.output, job.overwrite)
    tmp_probs = scratch_output(job.probabilities, job.overwrite) if job.probabilities else None
    try:
        with (
            full_disk_errors(tmp, tmp_probs),
            DenseOutputs(tmp, tmp_probs, template, ClassCoding.of(task.spec.classes)) as outputs,
        ):
            for file in sorted(job.parts.glob("*.npz")):
                with np.load(file) as part:
                    row, col, pixels = (int(v) for v in part["origin"])
                    probs = part["probs"] if "probs" in part.files else None
                    outputs.write_encoded(EncodedBlock(row, col, part["classes"], probs, pixels))
            outputs.finish(task.spec, task.class_names())
        _to_cogs((tmp, job.output), (tmp_probs, job.probabilities))
    finally:
        close_inputs([], tmp, tmp_probs)
        shutil.rmtree(job.parts, ignore_errors=True)
    return outputs.pixels
