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
import pickle
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import rasterio
import rasterio.shutil
import torch

from geopera import __version__
from geopera.core.contracts import EmbeddingRaster, EmbeddingSet
from geopera.core.devices import resolve_device
from geopera.core.locks import hold
from geopera.core.outputs import require_new_folder, write_json
from geopera.core.pipeline import BackgroundWriter, overlap_pays, prefetched
from geopera.core.ranks import (
    fabric_for,
    launch,
    launch_rank,
    launched_outside,
    share,
    together,
)
from geopera.data.labelled.windows import RasterInput, bounded_gdal_cache
from geopera.embed.catalog import describe_embeddings
from geopera.embed.errors import EmbedError
from geopera.embed.forward import chip_reads, chip_row, column_batches
from geopera.embed.rasters import EmbedRaster, prepare_rasters
from geopera.embed.writers import finish_folder, save_row, write_outputs

T = TypeVar("T")
LEVELS = ("patch", "chip", "both")
DTYPES = ("float16", "int8")


@dataclass
class EmbedSummary:
    """What ``embed`` wrote.

    Attributes:
        out: The output folder.
        manifest: Its ``embeddings.json``.
        resumed_rows: Chip rows taken from an interrupted run.
        merge_seconds: Time spent putting the chip rows together into the outputs (rank 0, or
            the one process: it writes them the same way).
    """

    out: Path
    manifest: EmbeddingSet
    resumed_rows: int = 0
    merge_seconds: float = 0.0


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


@dataclass
class _Job:
    """One ``embed`` call, as every rank needs it (picklable: spawned ranks receive it)."""

    settings: _Settings
    out: Path
    device: str
    batch_size: int
    resume: bool
    overwrite: bool
    skip_outside_roi: bool
    pipeline: bool | None


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
    devices: int = 1,
    num_nodes: int = 1,
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
        progress: Called with (chips done, chips in all) as work advances (one process only).
        skip_outside_roi: Leave out inputs the ROI misses (archives) instead of failing.
        nodata: Nodata value of the inputs when their files do not set one.
        pipeline: Reader and writer threads beside the model (None: where they pay, see
            :func:`geopera.core.pipeline.overlap_pays`).
        band_map: ``--bands`` pairs (backbone band or common name -> raster band), or None.
        devices: Processes (devices) per node; above 1, chip rows are shared among them
            (:mod:`geopera.core.ranks`).
        num_nodes: Nodes (started by torchrun or SLURM, one process per device).

    Returns:
        The folder and its manifest.

    Raises:
        EmbedError: On inconsistent settings, or when a rank failed (named);
            FileExistsError for an existing ``out``.
    """
    settings = _Settings(
        [str(p) for p in inputs], weights, roi, level, chip_size, dtype, nodata, band_map
    )
    settings.check(batch_size)
    job = _Job(settings, out, device, batch_size, resume, overwrite, skip_outside_roi, pipeline)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    if devices * num_nodes == 1 and not launched_outside():
        with hold(lock, f"the output {out}"):  # one process per --out
            return _run(job, None, progress)
    if launch_rank() != 0:  # a rank torchrun or srun started: rank 0 holds the lock
        return _ranks(job, devices, num_nodes)
    with hold(lock, f"the output {out}"):
        return _ranks(job, devices, num_nodes)


def _ranks(job: _Job, devices: int, num_nodes: int) -> EmbedSummary:
    """Run the job on ``devices`` x ``num_nodes`` ranks; a failed rank is one line."""
    fabric = fabric_for(resolve_device(job.device), devices, num_nodes)
    result = launch(fabric, _rank_main, pickle.dumps(job), "embed")
    if isinstance(result, str):
        raise EmbedError(result)
    resumed, merge = result
    return EmbedSummary(job.out, EmbeddingSet.read(job.out / EmbeddingSet.FILE), resumed, merge)


def _rank_main(fabric: Any, job: bytes) -> tuple[int, float]:
    """One rank's run: rows taken from an interrupted run, and merge time (rank 0's)."""
    done = _run(pickle.loads(job), fabric, None)  # our own job, pickled in _ranks
    return done.resumed_rows, done.merge_seconds


def _run(
    job: _Job, fabric: Any | None, progress: Callable[[int, int], None] | None
) -> EmbedSummary:
    """Embed this rank's share of the chip rows; rank 0 then writes the outputs.

    Args:
        job: The call.
        fabric: The launched Fabric, or None for one process.
        progress: Called with (chips done, chips in all).

    Returns:
        The summary (on every rank; only rank 0 wrote the outputs).
    """
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)

    def step(work: Callable[[], T]) -> T:  # every rank, stopped together when one fails
        return together(fabric, work) if fabric is not None else work()

    s = job.settings
    dev = fabric.device if fabric is not None else resolve_device(job.device)
    rasters = step(lambda: _checked_rasters(job, dev, world))
    work = job.out.parent / f".{job.out.name}.partial"
    step(lambda: _work_folder(job.out, s, job.resume, job.overwrite) if rank == 0 else work)
    resumed = step(
        lambda: sum(len(_row_files(x, work / "rows")) for x in rasters) if job.resume else 0
    )
    mine = share([(i, r) for i, x in enumerate(rasters) for r in x.chip_rows], rank, world)
    threads = overlap_pays(dev) if job.pipeline is None else job.pipeline
    counter = _Counter(sum(len(r.chip_rows) * len(r.chip_cols) for r in rasters), progress)
    sizes = (s.chip_size, job.batch_size)
    row_files = step(
        lambda: [
            _embed_rows(
                x, work / "rows" / x.name, sizes, threads, counter, {r for i, r in mine if i == n}
            )
            for n, x in enumerate(rasters)
        ]
    )
    started = time.perf_counter()
    manifest = step(lambda: _merge(rasters, row_files, s, work, job.out) if rank == 0 else None)
    merge = time.perf_counter() - started
    return EmbedSummary(job.out, manifest, resumed, merge)  # type: ignore[arg-type]


def _checked_rasters(job: _Job, device: torch.device, world: int) -> list[EmbedRaster]:
    """Every input checked, on every rank; more ranks than chip rows is an error."""
    s = job.settings
    rasters = prepare_rasters(
        s.inputs, s.weights, s.roi, s.chip_size, device, job.skip_outside_roi, s.nodata, s.band_map
    )
    rows = sum(len(r.chip_rows) for r in rasters)
    if world > rows:
        raise EmbedError(
            f"{world} processes for {rows} chip rows: give at most {rows} --devices x --num-nodes"
        )
    return rasters


def _merge(
    rasters: list[EmbedRaster],
    row_files: list[dict[int, Path]],
    settings: _Settings,
    work: Path,
    out: Path,
) -> EmbeddingSet:
    """Rank 0: every rank's chip rows into the COGs and GeoParquets, then ``out`` in place."""
    sizes = (settings.level, settings.chip_size, settings.dtype)
    entries = [
        write_outputs(raster, files, sizes, work)
        for raster, files in zip(rasters, row_files, strict=True)
    ]
    manifest = _manifest(rasters[0], entries, settings)
    manifest.write(work / EmbeddingSet.FILE)
    describe_embeddings(manifest, work)
    finish_folder(work, out)
    return manifest


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
    """Chips done, for the progress callback."""

    total: int
    progress: Callable[[int, int], None] | None
    done: int = 0

    def advance(self, chips: int) -> None:
        """Count ``chips`` more as done."""
        self.done += chips
        if self.progress is not None:
            self.progress(self.done, self.total)


def _row_file(folder: Path, row: int) -> Path:
    """Where chip row ``row`` of a raster is saved, in the raster's ``folder`` of rows."""
    return folder / f"r{row:06d}.npz"


def _row_files(raster: EmbedRaster, rows: Path) -> list[Path]:
    """The chip rows of ``raster`` saved so far under ``rows`` (by an interrupted run)."""
    return [f for i in raster.chip_rows if (f := _row_file(rows / raster.name, i)).is_file()]


def _embed_rows(
    raster: EmbedRaster,
    folder: Path,
    sizes: tuple[int, int],
    threads: bool,
    counter: _Counter,
    mine: set[int] | None = None,
) -> dict[int, Path]:
    """Embed the chip rows not done yet; each row is saved to its file as soon as it is done.

    Args:
        raster: The raster.
        folder: Where its chip rows go.
        sizes: Chip size in pixels, and chips per forward pass.
        threads: A reader thread ahead of the model and a writer thread behind it.
        counter: Counts the chips done.
        mine: The rows this rank embeds (None: every row).

    Returns:
        The file of every chip row of the raster, by row index (other ranks write theirs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    row_files = {i: _row_file(folder, i) for i in raster.chip_rows}
    todo = [
        i for i, path in row_files.items() if not path.is_file() and (mine is None or i in mine)
    ]
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
