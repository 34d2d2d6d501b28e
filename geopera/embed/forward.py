"""Chip rows through the backbone: batched reads of neighbouring chips, tokens, chip embeddings."""

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from shapely import contains_xy

from geopera.data.labelled.labels import Grid, apply_affine
from geopera.data.labelled.windows import RasterInput, read_strip
from geopera.embed.rasters import EmbedRaster

#: A token is valid when at least this share of its pixels is valid.
MIN_VALID_SHARE = 0.5


def _token_centres(grid: Grid, p: int, row0: int, rows: int, col0: int, cols: int) -> Any:
    """Map coordinates of token centres: two (rows, cols) arrays."""
    r, c = np.mgrid[row0 : row0 + rows, col0 : col0 + cols]
    return apply_affine(grid.transform, (c + 0.5) * p, (r + 0.5) * p)


#: One read of neighbouring chips: chip row, chip columns, pixels (1, C, S, n S), invalid (S, n S).
ChipRead = tuple[int, list[int], np.ndarray, np.ndarray]


def column_batches(raster: EmbedRaster, batch_size: int) -> list[list[int]]:
    """The chip columns of a row in near-equal batches of at most ``batch_size``."""
    n_batches = math.ceil(len(raster.chip_cols) / batch_size)
    return [cols.tolist() for cols in np.array_split(raster.chip_cols, n_batches)]


def chip_reads(
    raster: EmbedRaster, inputs: list[RasterInput], rows: list[int], chip_size: int, batch_size: int
) -> Iterator[ChipRead]:
    """Read the chips of ``rows``, one read per batch of neighbouring chips (a reader thread)."""
    s = chip_size
    for i in rows:
        for cols in column_batches(raster, batch_size):
            data, invalid = read_strip(inputs, i * s, cols[0] * s, s, len(cols) * s)
            yield i, cols, data, invalid


def chip_row(
    raster: EmbedRaster,
    reads: Iterable[ChipRead],
    i: int,
    chip_size: int,
    advance: Callable[[int], None],
) -> dict[str, np.ndarray]:
    """Tokens and chip embeddings of chip row ``i`` from its reads.

    Chips without a valid token (nodata, outside the ROI) get no forward pass.

    Returns:
        ``tokens`` (D, th, cols) float16 (NaN where invalid), ``valid`` (th, cols) bool,
        ``chip_cols`` (n,), ``chip_embeddings`` (n, D) float32, ``chip_tokens`` (n,) counts.
    """
    emb, p = raster.embedder, raster.embedder.token_size
    t = chip_size // p
    th = min(t, raster.rows - i * t)
    tokens = np.full((emb.dim, th, raster.cols), np.nan, dtype=np.float16)
    valid_row = np.zeros((th, raster.cols), dtype=bool)
    chips: list[tuple[int, np.ndarray, int]] = []
    for row, cols, data, invalid in reads:
        if row != i:
            raise RuntimeError(f"chip reads out of order: row {row} while embedding row {i}")
        s, n = chip_size, len(cols)
        bands = data.shape[1]
        pixels = data[0].reshape(bands, s, n, s).transpose(2, 0, 1, 3)  # (C,S,nS) -> (n,C,S,S)
        masks = invalid.reshape(s, n, s).transpose(1, 0, 2)  # (S, nS) -> (n, S, S)
        widths = [min(t, raster.cols - j * t) for j in cols]
        oks = []
        for b, j in enumerate(cols):
            # (S, S) -> (t, p, t, p) -> (t, t): share of valid pixels per token
            share = 1.0 - masks[b].reshape(t, p, t, p).mean(axis=(1, 3))
            ok = share[:th, : widths[b]] >= MIN_VALID_SHARE
            if raster.geom is not None:
                x, y = _token_centres(raster.grid, p, i * t, th, j * t, widths[b])
                ok &= contains_xy(raster.geom, x, y)
            oks.append(ok)
        keep = [b for b in range(n) if oks[b].any()]  # no forward pass for empty chips
        if keep:
            out = emb.tokens(torch.from_numpy(np.ascontiguousarray(pixels[keep]))).numpy()
        for k, b in enumerate(keep):
            j, ok = cols[b], oks[b]
            block = out[k, :, :th, : widths[b]]  # (D, th, tw)
            cells = slice(j * t, j * t + widths[b])
            tokens[:, :, cells] = np.where(ok[None], block, np.nan).astype(np.float16)
            valid_row[:, cells] = ok
            chips.append((j, block[:, ok].mean(axis=1).astype(np.float32), int(ok.sum())))
        advance(n)
    dim = emb.dim
    return {
        "tokens": tokens,
        "valid": valid_row,
        "chip_cols": np.array([c[0] for c in chips], dtype=np.int64),
        "chip_embeddings": np.stack([c[1] for c in chips]) if chips else np.zeros((0, dim)),
        "chip_tokens": np.array([c[2] for c in chips], dtype=np.int64),
    }
