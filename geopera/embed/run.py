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

import dataclasses
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import rasterio
import rasterio.shutil

from geopera import __version__
from geopera.core.contracts import EmbeddingRaster, EmbeddingSet
from geopera.core.devices import resolve_device
from geopera.core.locks import hold
from geopera.core.outputs import require_new_folder, write_json
from geopera.core.pipeline import BackgroundWriter, overlap_pays, prefetched
from geopera.data.labelled.windows import RasterInput, bounded_gdal_cache
from geopera.embed.chips import chip_reads, chip_row, column_batches
from geopera.embed.manifest import EmbedError
from geopera.embed.rasters import EmbedRaster, prepare_rasters, raster_datetime
from geopera.embed.writers import save_row, write_chips, write_patches

LEVELS = ("patch", "chip", "both")
DTYPES = ("float16", "int8")


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


@dataclass(frozen=True)
class _Settings:
    """The arguments that decide the output: ``--resume`` must repeat them."""

    inputs: list[str]
    weights: str | None
    roi: str | None
    level: str
    chip_size: int
    dtype: str
    nodata: float | None
    band_map: dict[str, str] | None = None

    def check(self, batch_size: int) -> None:
        """Refuse inconsistent settings before anything is read."""
        if self.level not in LEVELS:
            raise EmbedError(f"--level {self.level!r} is not one of {', '.join(LEVELS)}")
        if self.dtype not in DTYPES:
            raise EmbedError(f"--dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.chip_size <= 0 or batch_size <= 0:
            raise EmbedError("--chip-size and --batch-size must be positive")
        if not self.inputs:
            raise EmbedError("no input raster: pass --input RASTER... or --archive PATH...")


def _work_folder(out: Path, settings: _Settings, resume: bool, overwrite: bool) -> Path:
    work = out.parent / f".{out.name}.partial"
    if resume:
        if not work.is_dir():
            raise FileNotFoundError(f"nothing to resume: {work} does not exist")
        started = json.loads((work / "settings.json").read_text())
        now = dataclasses.asdict(settings)
        if started != now:
            changed = sorted(k for k in now if started.get(k) != now[k])
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
    write_json(work / "settings.json", dataclasses.asdict(settings))
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
    band_map: dict[str, str] | None = None,
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
        band_map: ``--bands`` pairs (backbone band or common name -> raster band), or None.

    Returns:
        The folder and its manifest.

    Raises:
        EmbedError: On inconsistent settings; FileExistsError for an existing ``out``.
    """
    settings = _Settings(
        [str(p) for p in inputs], weights, roi, level, chip_size, dtype, nodata, band_map
    )
    settings.check(batch_size)
    dev = resolve_device(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    with hold(out.parent / f".{out.name}.lock", f"the output {out}"):  # one process per --out
        rasters = prepare_rasters(
            settings.inputs, weights, roi, chip_size, dev, skip_outside_roi, nodata, band_map
        )
        threads = overlap_pays(dev) if pipeline is None else pipeline
        work = _work_folder(out, settings, resume, overwrite)
        counter = _Counter(sum(len(r.chip_rows) * len(r.chip_cols) for r in rasters), progress)
        entries = []
        for raster in rasters:
            folder = work / "rows" / raster.name
            row_files = _embed_rows(raster, folder, (chip_size, batch_size), threads, counter)
            entries.append(_write_outputs(raster, row_files, settings, work))
        manifest = _manifest(rasters[0], entries, settings)
        manifest.write(work / EmbeddingSet.FILE)
        _finish(work, out)
    return EmbedSummary(out, manifest, counter.resumed_rows)


def _manifest(
    first: EmbedRaster, entries: list[EmbeddingRaster], settings: _Settings
) -> EmbeddingSet:
    """``embeddings.json``: the backbone, the sizes and one entry per raster."""
    return EmbeddingSet(
        weights=first.info.weights,
        model=first.info.model,
        token_size=first.embedder.token_size,
        chip_size=settings.chip_size,
        level=settings.level,
        dtype=settings.dtype,
        rasters=entries,
        roi=settings.roi,
        geopera_version=__version__,
    )


@dataclass
class _Counter:
    """Chips done (for the progress callback) and chip rows taken from an interrupted run."""

    total: int
    progress: Callable[[int, int], None] | None
    done: int = 0
    resumed_rows: int = 0

    def advance(self, chips: int) -> None:
        """Count ``chips`` more as done."""
        self.done += chips
        if self.progress is not None:
            self.progress(self.done, self.total)


def _embed_rows(
    raster: EmbedRaster,
    folder: Path,
    sizes: tuple[int, int],
    threads: bool,
    counter: _Counter,
) -> dict[int, Path]:
    """Embed the chip rows not done yet; each row is saved to its file as soon as it is done.

    Args:
        raster: The raster.
        folder: Where its chip rows go.
        sizes: Chip size in pixels, and chips per forward pass.
        threads: A reader thread ahead of the model and a writer thread behind it.
        counter: Counts the chips done.

    Returns:
        The file of every chip row of the raster, by row index.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row_files = {i: folder / f"r{i:06d}.npz" for i in raster.chip_rows}
    todo = [i for i, path in row_files.items() if not path.is_file()]
    counter.resumed_rows += len(row_files) - len(todo)
    counter.advance((len(row_files) - len(todo)) * len(raster.chip_cols))
    chip_size, batch_size = sizes
    per_row = len(column_batches(raster, batch_size))
    with rasterio.open(raster.path) as ds:
        opened = [RasterInput(ds, raster.info.bands, raster.nodata)]
        # a reader thread ahead of the model, a writer thread behind it
        reads = prefetched(chip_reads(raster, opened, todo, chip_size, batch_size), enabled=threads)
        with closing(reads), BackgroundWriter(enabled=threads) as writer:  # end before ds
            for i in todo:
                batches = itertools.islice(reads, per_row)
                row = chip_row(raster, batches, i, chip_size, counter.advance)
                writer.submit(save_row, row_files[i], row)
    return row_files


def _write_outputs(
    raster: EmbedRaster, row_files: dict[int, Path], settings: _Settings, work: Path
) -> EmbeddingRaster:
    """Assemble a raster's chip rows into its COG and GeoParquet, as the level asks."""
    patches = f"{raster.name}.tif" if settings.level in ("patch", "both") else None
    chips = f"{raster.name}.parquet" if settings.level in ("chip", "both") else None
    if patches is not None:
        tags = {
            "geopera_weights": raster.info.weights,
            "geopera_token_size": str(raster.embedder.token_size),
            "geopera_source": raster.path,
        }
        write_patches(raster, row_files, settings.chip_size, settings.dtype, work / patches, tags)
    written = None
    if chips is not None:
        written = write_chips(raster, row_files, settings.chip_size, work / chips)
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


def _finish(work: Path, out: Path) -> None:
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
