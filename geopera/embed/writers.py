"""Embed's outputs: chip rows saved as they are done, then assembled into a COG and a GeoParquet."""

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely.geometry import box

from geopera.core.contracts import EmbeddingRaster
from geopera.core.outputs import atomic_file
from geopera.embed.rasters import EmbedRaster, raster_datetime

#: Tile size of the patch-level COG: a block holds BLOCK x BLOCK tokens of D bands (D = 384 at
#: ViT-S: 12 MiB in float16), so that memory does not grow with the raster up to 512 px blocks.
BLOCK = 128


def save_row(path: Path, row: dict[str, np.ndarray]) -> None:
    """Save one chip row (tokens, validity, chip embeddings) atomically."""
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **row)  # type: ignore[arg-type]


def load_row(path: Path) -> dict[str, np.ndarray]:
    """Load a chip row saved by :func:`save_row`."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _int8_scaling(row_files: list[Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band scale and offset that map the valid tokens' range onto [-127, 127]."""
    lo = np.full(dim, np.inf)
    hi = np.full(dim, -np.inf)
    for f in row_files:
        row = load_row(f)
        values = row["tokens"][:, row["valid"]].astype(np.float32)  # (D, n)
        if values.size:
            lo = np.minimum(lo, values.min(1))
            hi = np.maximum(hi, values.max(1))
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 0.0)
    scale = np.maximum(hi - lo, 1e-6) / 254.0
    offset = lo + 127.0 * scale
    return scale, offset


def write_patches(
    raster: EmbedRaster,
    row_files: dict[int, Path],
    chip_size: int,
    dtype: str,
    out: Path,
    tags: dict[str, str],
) -> None:
    """Assemble the chip rows into a COG on the token grid."""
    emb, p = raster.embedder, raster.embedder.token_size
    t = chip_size // p
    transform = raster.grid.transform @ Affine.scale(p)
    nodata: float = float("nan") if dtype == "float16" else -128
    scratch = out.with_name(f".{out.name}.scratch-{os.getpid()}")
    files = [row_files[i] for i in sorted(row_files)]
    scale, offset = _int8_scaling(files, emb.dim) if dtype == "int8" else (None, None)
    profile = {
        "driver": "GTiff",
        "width": raster.cols,
        "height": raster.rows,
        "count": emb.dim,
        "dtype": dtype,
        "nodata": nodata,
        "crs": raster.grid.crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "BIGTIFF": "IF_SAFER",
        "INTERLEAVE": "BAND",  # chip-row writes and overviews: 10x faster than pixel
    }
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            for i in range(0, math.ceil(raster.rows / t)):  # rows outside the ROI stay nodata
                if i not in row_files:
                    continue
                row = load_row(row_files[i])
                data = row["tokens"]  # (D, th, cols) float16
                if scale is not None and offset is not None:
                    q = np.round(
                        (data.astype(np.float32) - offset[:, None, None]) / scale[:, None, None]
                    )
                    data = np.where(row["valid"][None], np.clip(q, -127, 127), -128)
                    data = data.astype(np.int8)
                dst.write(data, window=Window(0, i * t, raster.cols, data.shape[1]))
            # overviews here, down to one block: GDAL's COG driver cannot make float16 ones
            side = max(raster.rows, raster.cols)
            factors = [2**k for k in range(1, 32) if side >> (k - 1) > BLOCK]
            if factors:
                dst.build_overviews(factors, Resampling.average)
            dst.descriptions = tuple(f"emb_{k:04d}" for k in range(emb.dim))
            if scale is not None and offset is not None:
                dst.scales = scale.tolist()
                dst.offsets = offset.tolist()
            dst.update_tags(**tags)
        with atomic_file(out) as cog:
            rasterio.shutil.copy(
                scratch,
                cog,
                driver="COG",
                compress="ZSTD",
                level=1,
                BLOCKSIZE=BLOCK,
                BIGTIFF="IF_SAFER",
                OVERVIEWS="FORCE_USE_EXISTING",
            )
    finally:
        if scratch.exists():
            scratch.unlink()


def write_chips(raster: EmbedRaster, row_files: dict[int, Path], chip_size: int, out: Path) -> int:
    """Assemble the chip rows into a GeoParquet; returns the number of chips."""
    t = raster.grid.transform
    when = raster_datetime(raster.path)
    records: list[dict[str, Any]] = []
    geoms = []
    for i in sorted(row_files):
        row = load_row(row_files[i])
        for j, vector, count in zip(
            row["chip_cols"].tolist(),
            row["chip_embeddings"],
            row["chip_tokens"].tolist(),
            strict=True,
        ):
            h = min(chip_size, raster.grid.height - i * chip_size)
            w = min(chip_size, raster.grid.width - j * chip_size)
            x0, y0 = t @ (j * chip_size, i * chip_size)
            x1, y1 = t @ (j * chip_size + w, i * chip_size + h)
            geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            records.append(
                {
                    "chip_id": f"{raster.name}:{i}:{j}",
                    "source": raster.path,
                    "datetime": when,
                    "row": i,
                    "col": j,
                    "valid_tokens": count,
                    "embedding": vector.astype(np.float32),
                }
            )
    columns = ["chip_id", "source", "datetime", "row", "col", "valid_tokens", "embedding"]
    frame = gpd.GeoDataFrame(records, columns=columns, geometry=geoms, crs=raster.grid.crs)
    with atomic_file(out) as tmp:
        frame.to_parquet(tmp)
    return len(records)


def write_outputs(
    raster: EmbedRaster, row_files: dict[int, Path], sizes: tuple[str, int, str], work: Path
) -> EmbeddingRaster:
    """Assemble a raster's chip rows into its COG and GeoParquet, as the level asks.

    Args:
        raster: The raster.
        row_files: Its chip rows' files, by row index (whichever rank wrote them).
        sizes: The level, the chip size in pixels, and the patch COG's dtype.
        work: The folder the outputs go to.

    Returns:
        The raster's entry of ``embeddings.json``.
    """
    level, chip_size, dtype = sizes
    patches = f"{raster.name}.tif" if level in ("patch", "both") else None
    chips = f"{raster.name}.parquet" if level in ("chip", "both") else None
    if patches is not None:
        tags = {
            "geopera_weights": raster.info.weights,
            "geopera_token_size": str(raster.embedder.token_size),
            "geopera_source": raster.path,
        }
        write_patches(raster, row_files, chip_size, dtype, work / patches, tags)
    written = None
    if chips is not None:
        written = write_chips(raster, row_files, chip_size, work / chips)
    info = raster.info
    return EmbeddingRaster(
        name=raster.name,
        source=raster.path,
        crs=str(raster.grid.crs),
        token_rows=raster.rows,
        token_cols=raster.cols,
        patches=patches,
        chips=chips,
        chips_written=written,
        datetime=raster_datetime(raster.path),
        bands=list(info.bands),
        band_names=list(info.band_names),
        band_rule=info.band_rule,
        ssl_method=info.ssl_method,
        normalisation=raster.embedder.norm,
        band_identities=info.band_identities,
        nodata=raster.nodata,
    )


def finish_folder(work: Path, out: Path) -> None:
    """Clear the work folder's scratch and move it onto ``out``."""
    for leftover in work.glob(".*"):  # scratch files of a killed earlier attempt
        if leftover.is_file():
            leftover.unlink()
    shutil.rmtree(work / "rows")
    (work / "settings.json").unlink()
    _replace(work, out)


def _replace(work: Path, out: Path) -> None:
    """Move the finished work folder onto ``out`` (an old ``out`` goes only after)."""
    old = None
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        old = out.with_name(f".{out.name}.old-{int(time.time())}")
        os.replace(out, old)
    elif out.exists():
        out.rmdir()
    os.replace(work, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()
