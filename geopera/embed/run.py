"""``geopera embed``: rasters -> patch-level COGs and chip-level GeoParquet of embeddings.

For every input raster, chips of ``chip_size`` pixels on a grid anchored at the raster's origin
go through a frozen backbone (see :mod:`geopera.embed.backbone`); each chip gives
``chip_size / p`` x ``chip_size / p`` patch tokens (``p`` the token size). The outputs, in
``--out``:

* ``<name>.tif`` (patch level): a Cloud-Optimised GeoTIFF whose pixels are the patch tokens,
  D bands, on the token grid of the input (same CRS; pixel size = input pixel size x p; origin
  at the input's origin; ``height // p`` rows and ``width // p`` columns). ``float16`` with NaN
  as nodata, or ``int8`` with -128 as nodata and a scale/offset per band (GDAL's band metadata:
  value = stored x scale + offset). Tokens whose pixels are mostly nodata, or whose centre lies
  outside the ROI, are nodata. Overviews are built by GDAL's COG driver.
* ``<name>.parquet`` (chip level): a GeoParquet with one row per chip that has a valid token:
  ``chip_id``, ``source``, ``datetime`` (from a ``YYYYMMDD`` date in the file name or the TIFF
  date tag, else empty), ``row``/``col`` (chip indices), ``valid_tokens``, ``embedding`` (the
  mean of the chip's valid tokens, a list of D floats) and the chip's footprint (raster CRS).
* ``embeddings.json``: the manifest (:class:`~geopera.core.contracts.EmbeddingSet`).

Work happens in a hidden sibling ``.<out>.partial``: each chip row is saved there as soon as
it is done, atomically. An interrupted run leaves that folder; ``--resume`` continues from the
rows already done, and the final folder appears only when everything is written. Chips are read
by a reader thread ahead of the model and rows saved by a writer thread behind it
(:mod:`geopera.core.pipeline`); memory holds a few chip rows at a time, whatever the raster's
size.
"""

import itertools
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.shutil
import torch
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window
from shapely import contains_xy
from shapely.geometry import box
from timm.models.vision_transformer import VisionTransformer

from geopera import __version__
from geopera.core.contracts import EmbeddingSet
from geopera.core.devices import resolve_device
from geopera.core.errors import ROIError
from geopera.core.outputs import atomic_file, require_new_folder, write_json
from geopera.core.pipeline import BackgroundWriter, overlap_pays, prefetched
from geopera.data.labelled.labels import Grid, apply_affine
from geopera.data.labelled.windows import RasterInput, bounded_gdal_cache, read_strip, roi_window
from geopera.data.roi import load_roi
from geopera.embed.backbone import (
    DEFAULT_MODEL,
    Embedder,
    EmbedderInfo,
    build_frozen_vit,
    plan_raster,
    raster_normalisation,
    token_grid,
)
from geopera.embed.manifest import MANIFEST, EmbedError
from geopera.models.loading import resolve_weights

LEVELS = ("patch", "chip", "both")
DTYPES = ("float16", "int8")
#: Tile size of the patch-level COG: a block holds BLOCK x BLOCK tokens of D bands (D = 384 at
#: ViT-S: 12 MiB in float16), so that memory does not grow with the raster up to 512 px blocks.
BLOCK = 128
#: A token is valid when at least this share of its pixels is valid.
MIN_VALID_SHARE = 0.5


@dataclass
class EmbedSummary:
    """What ``embed`` wrote.

    Attributes:
        out: The output folder.
        manifest: Its ``embeddings.json``.
        resumed_rows: Chip rows taken from an interrupted run.
    """

    out: Path
    manifest: EmbeddingSet
    resumed_rows: int = 0


@dataclass
class _Raster:
    """One input raster, checked and ready."""

    name: str
    path: str
    grid: Grid
    nodata: float | None
    window: Window
    geom: Any
    embedder: Embedder
    info: EmbedderInfo
    rows: int = 0
    cols: int = 0
    chip_rows: list[int] = field(default_factory=list)
    chip_cols: list[int] = field(default_factory=list)


def _names(paths: list[str]) -> list[str]:
    """Output names: file stems, made unique."""
    names: list[str] = []
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem) or "raster"
        name, n = stem, 1
        while name in names:
            n += 1
            name = f"{stem}_{n}"
        names.append(name)
    return names


def raster_datetime(path: str) -> str | None:
    """ISO date of a raster: a ``YYYYMMDD`` run in its name, else its TIFF date tag."""
    match = re.search(r"(?<!\d)((?:19|20)\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?!\d)",
                      Path(path).stem)  # fmt: skip
    if match:
        return "-".join(match.groups())
    with rasterio.open(path) as ds:
        tag = ds.tags().get("TIFFTAG_DATETIME")
    if tag and re.fullmatch(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}", tag.strip()):
        day, clock = tag.strip().split(" ")
        return f"{day.replace(':', '-')}T{clock}"
    return None


def _prepare(
    paths: list[str], weights: str | None, roi: str | None, chip_size: int, device: torch.device,
    skip_outside_roi: bool, nodata: float | None,
) -> list[_Raster]:  # fmt: skip
    """Check every input before anything is written."""
    region = load_roi(roi) if roi else None
    source = resolve_weights(weights, DEFAULT_MODEL)
    vits: dict[int, VisionTransformer] = {}  # one backbone per band count, shared by rasters
    rasters = []
    for name, path in zip(_names(paths), paths, strict=True):
        if not Path(path).is_file() and not path.startswith("/vsi"):
            raise FileNotFoundError(f"input raster {path} does not exist")
        grid = Grid.of(path)
        try:
            window, geom = roi_window(grid, region)
        except ROIError:
            if skip_outside_roi:
                continue
            raise
        info = plan_raster(source, path)
        n = len(info.bands)
        if n not in vits:
            vits[n] = build_frozen_vit(source, n, chip_size)
        with rasterio.open(path) as ds:
            value = ds.nodata if ds.nodata is not None else nodata  # the file's own comes first
        embedder = Embedder(vits[n], raster_normalisation(path, info.bands, value), device)
        p = embedder.token_size
        rows, cols = token_grid(grid.height, grid.width, p)
        if rows == 0 or cols == 0:
            raise EmbedError(f"{path} is smaller than one token ({p} px)")
        t = chip_size // p
        r0 = int(window.row_off) // chip_size
        r1 = min(math.ceil((window.row_off + window.height) / chip_size), math.ceil(rows / t))
        c0 = int(window.col_off) // chip_size
        c1 = min(math.ceil((window.col_off + window.width) / chip_size), math.ceil(cols / t))
        if r1 <= r0 or c1 <= c0:
            raise EmbedError(f"the ROI covers no whole token of {path}")
        rasters.append(
            _Raster(name, path, grid, value, window, geom, embedder, info, rows, cols,
                    list(range(r0, r1)), list(range(c0, c1)))
        )  # fmt: skip
    if not rasters:
        raise ROIError(f"the ROI ({roi}) overlaps none of the {len(paths)} input rasters")
    return rasters


def _token_centres(grid: Grid, p: int, row0: int, rows: int, col0: int, cols: int) -> Any:
    """Map coordinates of token centres: two (rows, cols) arrays."""
    r, c = np.mgrid[row0 : row0 + rows, col0 : col0 + cols]
    return apply_affine(grid.transform, (c + 0.5) * p, (r + 0.5) * p)


#: One read of neighbouring chips: chip row, chip columns, pixels (1, C, S, n S), invalid (S, n S).
ChipRead = tuple[int, list[int], np.ndarray, np.ndarray]


def _column_batches(raster: _Raster, batch_size: int) -> list[list[int]]:
    """The chip columns of a row in near-equal batches of at most ``batch_size``."""
    n_batches = math.ceil(len(raster.chip_cols) / batch_size)
    return [cols.tolist() for cols in np.array_split(raster.chip_cols, n_batches)]


def _chip_reads(
    raster: _Raster, inputs: list[RasterInput], rows: list[int], chip_size: int, batch_size: int
) -> Iterator[ChipRead]:
    """Read the chips of ``rows``, one read per batch of neighbouring chips (a reader thread)."""
    s = chip_size
    for i in rows:
        for cols in _column_batches(raster, batch_size):
            data, invalid = read_strip(inputs, i * s, cols[0] * s, s, len(cols) * s)
            yield i, cols, data, invalid


def _chip_row(
    raster: _Raster, reads: Iterable[ChipRead], i: int, chip_size: int,
    advance: Callable[[int], None],
) -> dict[str, np.ndarray]:  # fmt: skip
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


def _save_row(path: Path, row: dict[str, np.ndarray]) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **row)  # type: ignore[arg-type]


def _load_row(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _int8_scaling(row_files: list[Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band scale and offset that map the valid tokens' range onto [-127, 127]."""
    lo = np.full(dim, np.inf)
    hi = np.full(dim, -np.inf)
    for f in row_files:
        row = _load_row(f)
        values = row["tokens"][:, row["valid"]].astype(np.float32)  # (D, n)
        if values.size:
            lo = np.minimum(lo, values.min(1))
            hi = np.maximum(hi, values.max(1))
    lo = np.where(np.isfinite(lo), lo, 0.0)
    hi = np.where(np.isfinite(hi), hi, 0.0)
    scale = np.maximum(hi - lo, 1e-6) / 254.0
    offset = lo + 127.0 * scale
    return scale, offset


def _write_patches(raster: _Raster, row_files: dict[int, Path], chip_size: int, dtype: str,
                   out: Path, tags: dict[str, str]) -> None:  # fmt: skip
    """Assemble the chip rows into a COG on the token grid."""
    emb, p = raster.embedder, raster.embedder.token_size
    t = chip_size // p
    transform = raster.grid.transform @ Affine.scale(p)
    nodata: float = float("nan") if dtype == "float16" else -128
    scratch = out.with_name(f".{out.name}.scratch-{os.getpid()}")
    files = [row_files[i] for i in sorted(row_files)]
    scale, offset = _int8_scaling(files, emb.dim) if dtype == "int8" else (None, None)
    profile = {
        "driver": "GTiff", "width": raster.cols, "height": raster.rows, "count": emb.dim,
        "dtype": dtype, "nodata": nodata, "crs": raster.grid.crs, "transform": transform,
        "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "BIGTIFF": "IF_SAFER",
        "INTERLEAVE": "BAND",  # chip-row writes and overviews: 10x faster than pixel
    }  # fmt: skip
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            for i in range(0, math.ceil(raster.rows / t)):  # rows outside the ROI stay nodata
                if i not in row_files:
                    continue
                row = _load_row(row_files[i])
                data = row["tokens"]  # (D, th, cols) float16
                if scale is not None and offset is not None:
                    q = np.round((data.astype(np.float32) - offset[:, None, None])
                                 / scale[:, None, None])  # fmt: skip
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
            rasterio.shutil.copy(scratch, cog, driver="COG", compress="ZSTD", level=1,
                                 BLOCKSIZE=BLOCK, BIGTIFF="IF_SAFER",
                                 OVERVIEWS="FORCE_USE_EXISTING")  # fmt: skip
    finally:
        if scratch.exists():
            scratch.unlink()


def _write_chips(raster: _Raster, row_files: dict[int, Path], chip_size: int, out: Path) -> int:
    """Assemble the chip rows into a GeoParquet; returns the number of chips."""
    t = raster.grid.transform
    when = raster_datetime(raster.path)
    records: list[dict[str, Any]] = []
    geoms = []
    for i in sorted(row_files):
        row = _load_row(row_files[i])
        for j, vector, count in zip(row["chip_cols"].tolist(), row["chip_embeddings"],
                                    row["chip_tokens"].tolist(), strict=True):  # fmt: skip
            h = min(chip_size, raster.grid.height - i * chip_size)
            w = min(chip_size, raster.grid.width - j * chip_size)
            x0, y0 = t @ (j * chip_size, i * chip_size)
            x1, y1 = t @ (j * chip_size + w, i * chip_size + h)
            geoms.append(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            records.append({
                "chip_id": f"{raster.name}:{i}:{j}", "source": raster.path, "datetime": when,
                "row": i, "col": j, "valid_tokens": count,
                "embedding": vector.astype(np.float32),
            })  # fmt: skip
    columns = ["chip_id", "source", "datetime", "row", "col", "valid_tokens", "embedding"]
    frame = gpd.GeoDataFrame(records, columns=columns, geometry=geoms, crs=raster.grid.crs)
    with atomic_file(out) as tmp:
        frame.to_parquet(tmp)
    return len(records)


def _settings(
    paths: list[str], weights: str | None, roi: str | None, level: str, chip_size: int,
    dtype: str,
) -> dict[str, Any]:  # fmt: skip
    return {"inputs": paths, "weights": weights, "roi": roi, "level": level,
            "chip_size": chip_size, "dtype": dtype}  # fmt: skip


def _work_folder(out: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> Path:
    work = out.parent / f".{out.name}.partial"
    if resume:
        if not work.is_dir():
            raise FileNotFoundError(f"nothing to resume: {work} does not exist")
        started = json.loads((work / "settings.json").read_text())
        if started != settings:
            changed = sorted(k for k in settings if started.get(k) != settings[k])
            raise EmbedError(
                f"--resume must repeat the interrupted run's arguments; these differ: "
                f"{', '.join(changed)}"
            )
        return work
    if not overwrite:
        require_new_folder(out, "choose a new --out, or pass --overwrite")
    if work.exists():
        raise EmbedError(
            f"an interrupted run left {work}: continue it with --resume, or delete that folder"
        )
    work.mkdir(parents=True)
    write_json(work / "settings.json", settings)
    return work


@bounded_gdal_cache
def embed(
    inputs: list[str],
    out: Path,
    weights: str | None = None,
    roi: str | None = None,
    level: str = "both",
    chip_size: int = 224,
    dtype: str = "float16",
    batch_size: int = 8,
    device: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    skip_outside_roi: bool = False,
    nodata: float | None = None,
    pipeline: bool | None = None,
) -> EmbedSummary:
    """Embed rasters (see the module docstring for the outputs).

    Args:
        inputs: Raster files.
        out: Output folder (new, or replaced with ``overwrite``).
        weights: Anything ``--weights`` accepts (None: random ``vit_small_patch16_224``).
        roi: Only embed inside this ROI (vector file, WKT or bbox).
        level: ``patch``, ``chip`` or ``both``.
        chip_size: Chip size in pixels (a multiple of the token size).
        dtype: Patch-level storage, ``float16`` or ``int8``.
        batch_size: Chips per forward pass.
        device: ``auto``, ``cpu``, ``cuda``...
        resume: Continue the interrupted run of the same arguments.
        overwrite: Replace an existing output folder (only once the new one is complete).
        progress: Called with (chips done, chips in all) as work advances.
        skip_outside_roi: Leave out inputs the ROI misses (archives) instead of failing.
        nodata: Nodata value of the inputs when their files do not set one.
        pipeline: Reader and writer threads beside the model (None: where they pay, see
            :func:`geopera.core.pipeline.overlap_pays`).

    Returns:
        The folder and its manifest.

    Raises:
        EmbedError: On inconsistent settings; FileExistsError for an existing ``out``.
    """
    if level not in LEVELS:
        raise EmbedError(f"--level {level!r} is not one of {', '.join(LEVELS)}")
    if dtype not in DTYPES:
        raise EmbedError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if chip_size <= 0 or batch_size <= 0:
        raise EmbedError("--chip-size and --batch-size must be positive")
    if not inputs:
        raise EmbedError("no input raster: pass --input RASTER... or --archive PATH...")
    paths = [str(p) for p in inputs]
    dev = resolve_device(device)
    rasters = _prepare(paths, weights, roi, chip_size, dev, skip_outside_roi, nodata)
    threads = overlap_pays(dev) if pipeline is None else pipeline
    settings = {**_settings(paths, weights, roi, level, chip_size, dtype), "nodata": nodata}
    work = _work_folder(out, settings, resume, overwrite)
    total = sum(len(r.chip_rows) * len(r.chip_cols) for r in rasters)
    done, resumed = 0, 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    entries = []
    for raster in rasters:
        folder = work / "rows" / raster.name
        folder.mkdir(parents=True, exist_ok=True)
        with rasterio.open(raster.path) as ds:
            opened = [RasterInput(ds, raster.info.bands, raster.nodata)]
            row_files = {i: folder / f"r{i:06d}.npz" for i in raster.chip_rows}
            todo = [i for i, path in row_files.items() if not path.is_file()]
            resumed += len(row_files) - len(todo)
            advance((len(row_files) - len(todo)) * len(raster.chip_cols))
            per_row = len(_column_batches(raster, batch_size))
            # a reader thread ahead of the model, a writer thread behind it
            reads = prefetched(
                _chip_reads(raster, opened, todo, chip_size, batch_size), enabled=threads
            )
            with closing(reads), BackgroundWriter(enabled=threads) as writer:  # end before ds
                for i in todo:
                    row = _chip_row(raster, itertools.islice(reads, per_row), i, chip_size, advance)
                    writer.submit(_save_row, row_files[i], row)
        entry: dict[str, Any] = {
            "name": raster.name, "source": raster.path, "crs": str(raster.grid.crs),
            "token_rows": raster.rows, "token_cols": raster.cols, "patches": None,
            "chips": None, "chips_written": None, "datetime": raster_datetime(raster.path),
            **{k: v for k, v in raster.info.__dict__.items() if k not in ("weights", "model")},
            "normalisation": raster.embedder.norm.__dict__, "nodata": raster.nodata,
        }  # fmt: skip
        tags = {"geopera_weights": raster.info.weights, "geopera_token_size": str(
            raster.embedder.token_size), "geopera_source": raster.path}  # fmt: skip
        if level in ("patch", "both"):
            entry["patches"] = f"{raster.name}.tif"
            _write_patches(raster, row_files, chip_size, dtype, work / entry["patches"], tags)
        if level in ("chip", "both"):
            entry["chips"] = f"{raster.name}.parquet"
            entry["chips_written"] = _write_chips(raster, row_files, chip_size,
                                                  work / entry["chips"])  # fmt: skip
        entries.append(entry)
    first = rasters[0]
    manifest = EmbeddingSet(
        weights=first.info.weights, model=first.info.model,
        token_size=first.embedder.token_size, chip_size=chip_size, level=level, dtype=dtype,
        rasters=entries, roi=roi, geopera_version=__version__,
    )  # fmt: skip
    manifest.write(work / MANIFEST)
    for leftover in work.glob(".*"):  # scratch files of a killed earlier attempt
        if leftover.is_file():
            leftover.unlink()
    shutil.rmtree(work / "rows")
    (work / "settings.json").unlink()
    _replace(work, out)
    return EmbedSummary(out, manifest, resumed)


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
