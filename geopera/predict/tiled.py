"""Sliding-window inference over rasters of any size, in bounded memory.

Tiles of the model's chip size lie on one global grid (stride = chip - overlap, the last tile of
a row or column flush with the raster's edge). The raster is processed in vertical bands of
``band_width`` columns; inside a band, tile rows are read as one strip each and their class
probabilities are accumulated, weighted by a window that fades linearly over the overlap, in a
rolling buffer one tile high. Rows that no later tile can reach are final and are written at
once. Strips are read by a reader thread ahead of the model
(:func:`geopera.core.pipeline.prefetched`). Every output pixel gets exactly the weighted
average of all tiles covering it (tiles that straddle two bands are computed twice), and
memory depends on the tile and band sizes only, never on the raster's size.

Pixels that are nodata in the input (all bands equal to the nodata value, or not finite), or
outside the ROI, are nodata in the output; tiles without a valid pixel are skipped.
"""

import itertools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.features
import torch
from rasterio.windows import Window
from torch import Tensor

from geopera.core.contracts import FinetunedSpec
from geopera.core.errors import BandSelectionError, GeoperaError, note
from geopera.core.outputs import remove_stale_partials
from geopera.core.pipeline import GDAL_IO, overlap_pays, prefetched
from geopera.data.labelled.labels import Grid, open_on_grid
from geopera.data.labelled.windows import RasterInput, read_strip
from geopera.models.bandplan import Bands, plan_bands, raster_bands


class PredictError(GeoperaError):
    """Inputs do not fit the model, or the ROI misses the raster."""


def tile_origins(start: int, stop: int, tile: int, stride: int) -> list[int]:
    """Tile offsets covering ``[start, stop)``: every ``stride``, the last one flush with ``stop``.

    Args:
        start: First pixel.
        stop: One past the last pixel.
        tile: Tile side.
        stride: Step between tiles.

    Returns:
        Increasing offsets (a single ``start`` when the span is shorter than a tile).
    """
    if stop - start <= tile:
        return [start]
    out = list(range(start, stop - tile, stride))
    out.append(stop - tile)
    return out


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) weights: 1 in the middle, fading linearly to near 0 over ``overlap`` pixels.

    Args:
        tile: Tile side.
        overlap: Overlap between neighbouring tiles.

    Returns:
        float32 weights, strictly positive.
    """
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        edge = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        ramp[:overlap] = np.minimum(ramp[:overlap], edge)
        ramp[-overlap:] = np.minimum(ramp[-overlap:], edge[::-1])
    return np.outer(ramp, ramp)


def band_indices(
    path: str, spec: FinetunedSpec, mapping: dict[str, str] | None = None
) -> list[int]:
    """1-based band indices of an input raster for a model: the band rule of every stage.

    The model's inputs are matched by hand (``--bands``), by identity or by name (see
    :mod:`geopera.models.bandplan`; every input must be found); when the identities of one
    side are unknown and the names differ, the training rasters' band positions are used.

    Args:
        path: Input raster.
        spec: The model's spec (``bands`` names and identities, ``data_bands`` positions).
        mapping: ``--bands`` pairs (model band or common name -> raster band), or None.

    Returns:
        Band indices to read.

    Raises:
        PredictError: If the raster lacks the model's bands.
    """
    data = raster_bands(path)
    model = Bands(spec.bands, spec.band_identities)
    try:
        plan = plan_bands(model, data, spec.in_chans, mapping, partial=False)
    except BandSelectionError as err:
        raise PredictError(f"{path}: {err}") from err
    if plan.rule in ("by-hand", "by-identity", "by-name"):
        for text in plan.notes:
            note(text)
        return [i + 1 for i in plan.indices]
    wanted = spec.data_bands or list(range(len(spec.bands)))
    if max(wanted) < len(data.names):
        return [i + 1 for i in wanted]
    raise PredictError(
        f"{path} has bands {data.names}; the model needs {spec.bands} (by name, or at file "
        f"positions {[i + 1 for i in wanted]})"
    )


def open_inputs(
    paths: list[str], spec: FinetunedSpec, mapping: dict[str, str] | None = None
) -> tuple[Grid, list[RasterInput]]:
    """Open the input(s); later inputs are warped onto the first one's grid when needed."""
    grid = Grid.of(paths[0])
    inputs = []
    for path in paths:
        ds = open_on_grid(path, grid)
        inputs.append(RasterInput(ds, band_indices(path, spec, mapping), ds.nodata))
    return grid, inputs


def balanced_chunks(items: list[int], batch_size: int) -> list[list[int]]:
    """Split into the fewest chunks of at most ``batch_size``, of near-equal sizes.

    37 tiles with batch 16 give 13, 12, 12 rather than 16, 16, 5.
    """
    count = math.ceil(len(items) / batch_size)
    size, extra = divmod(len(items), max(count, 1))
    out, start = [], 0
    for i in range(count):
        stop = start + size + (1 if i < extra else 0)
        out.append(items[start:stop])
        start = stop
    return out


def column_bands(start: int, stop: int, width: int) -> list[tuple[int, int]]:
    """Split ``[start, stop)`` into bands of about ``width`` columns."""
    count = max(1, math.ceil((stop - start) / width))
    edges = np.linspace(start, stop, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


@dataclass
class DenseBlock:
    """Final rows of one column band, ready to write.

    Attributes:
        row: Top row in the raster.
        col: Left column in the raster.
        probs: (K, h, w) blended probabilities.
        valid: (h, w) pixels with a prediction.
    """

    row: int
    col: int
    probs: np.ndarray
    valid: np.ndarray


def dense_blocks(
    predict: Callable[[Tensor], Tensor],
    inputs: list[RasterInput],
    window: Window,
    roi_geom: Any,
    transform: Any,
    tile: int,
    overlap: int,
    classes: int,
    batch_size: int = 8,
    band_width: int = 2048,
    device: torch.device | str = "cpu",
    pipeline: bool | None = None,
    share: tuple[int, int] = (0, 1),
) -> Iterator[DenseBlock]:
    """Blend tile predictions over a window, yielding final blocks in bounded memory.

    Args:
        predict: Raw (B, N, C, T, T) tiles -> (B, K, T, T) probabilities.
        inputs: Opened inputs (N = 1, or 2 dates).
        window: Pixel window to cover.
        roi_geom: ROI geometry in the raster's CRS, or None.
        transform: The raster's affine transform.
        tile: Tile side.
        overlap: Overlap between tiles (< tile).
        classes: K.
        batch_size: Tiles per forward pass.
        band_width: Columns per band (memory knob).
        device: Device of the model.
        pipeline: Read strips in a thread ahead of the model (None: where that pays, see
            :func:`geopera.core.pipeline.overlap_pays`).
        share: ``(rank, ranks)``: this rank's column bands, every ``ranks``-th from ``rank``
            (each band is blended from every tile that touches it, so bands are independent).

    Yields:
        Blocks of final rows, band by band, top to bottom.
    """
    r0, c0 = int(window.row_off), int(window.col_off)
    r1, c1 = r0 + int(window.height), c0 + int(window.width)
    stride = tile - overlap
    weight = blend_window(tile, overlap)
    ys = tile_origins(r0, r1, tile, stride)
    xs_all = tile_origins(c0, c1, tile, stride)
    ahead = overlap_pays(torch.device(device)) if pipeline is None else pipeline
    rank, ranks = share
    for b0, b1 in column_bands(c0, c1, band_width)[rank::ranks]:
        xs = [x for x in xs_all if x < b1 and x + tile > b0]
        left, right = xs[0], xs[-1] + tile
        width = right - left
        acc = np.zeros((classes, tile, width), dtype=np.float32)  # rows [top, top + tile)
        wsum = np.zeros((tile, width), dtype=np.float32)
        invalid = np.zeros((tile, width), dtype=bool)
        top = ys[0]
        # the reader thread reads the next strips while the model runs on this one
        strips = (_read_masked(inputs, y, left, tile, width, roi_geom, transform) for y in ys)
        for i, (y, (pixels, bad)) in enumerate(
            zip(ys, prefetched(strips, enabled=ahead), strict=True)
        ):
            if y > top:  # rows [top, y) are final: flush them, roll the buffers up
                yield _flush(acc, wsum, invalid, top, y - top, left, b0, b1, r1)
                shift = y - top
                for buf in (acc, wsum, invalid):
                    buf[..., :-shift, :] = buf[..., shift:, :]
                    buf[..., -shift:, :] = 0
                top = y
            invalid |= bad
            todo = [x for x in xs if not bad[:, x - left : x - left + tile].all()]
            for chunk in balanced_chunks(todo, batch_size):
                batch = np.stack([pixels[..., x - left : x - left + tile] for x in chunk])
                with torch.no_grad():
                    probs = predict(torch.from_numpy(batch).to(device)).float().cpu().numpy()
                for x, p in zip(chunk, probs, strict=True):  # p: (K, T, T)
                    acc[:, :, x - left : x - left + tile] += p * weight
                    wsum[:, x - left : x - left + tile] += weight
            if i == len(ys) - 1:
                yield _flush(acc, wsum, invalid, top, min(tile, r1 - top), left, b0, b1, r1)


def _read_masked(
    inputs: list[RasterInput],
    y: int,
    left: int,
    tile: int,
    width: int,
    roi_geom: Any,
    transform: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """One strip's pixels (N, C, T, Wb) and its invalid mask (T, Wb): nodata or outside the ROI."""
    with GDAL_IO:  # not while the writer thread writes (see GDAL_IO)
        pixels, bad = read_strip(inputs, y, left, tile, width)
    if roi_geom is not None:
        strip_transform = transform @ rasterio.Affine.translation(left, y)
        bad |= rasterio.features.geometry_mask(
            [roi_geom], out_shape=bad.shape, transform=strip_transform
        )
    return pixels, bad


def _flush(
    acc: np.ndarray,
    wsum: np.ndarray,
    invalid: np.ndarray,
    top: int,
    rows: int,
    left: int,
    b0: int,
    b1: int,
    r1: int,
) -> DenseBlock:
    rows = min(rows, r1 - top)
    a, b = b0 - left, b1 - left
    w = wsum[:rows, a:b]
    valid = (w > 0) & ~invalid[:rows, a:b]
    probs = acc[:, :rows, a:b] / np.maximum(w, 1e-12)[None]
    return DenseBlock(top, b0, probs, valid)


def scratch_output(output: Path, overwrite: bool) -> Path:
    """A hidden scratch path beside ``output``, after checking that ``output`` may be written.

    The caller writes the scratch file, converts it onto ``output`` with
    :func:`geopera.core.outputs.atomic_file`, and removes it.

    Args:
        output: The final file.
        overwrite: Whether an existing ``output`` may be replaced.

    Returns:
        The scratch path.

    Raises:
        FileExistsError: If ``output`` exists and ``overwrite`` is False.
    """
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} already exists; choose another --output or --overwrite")
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(output)  # what a killed earlier run left
    return output.with_name(f".{output.name}.scratch-{os.getpid()}")
