"""The parts of ``geopera archive shards``: patches drawn once by the pretraining sampler.

A GPU step consumes patches faster than windowed reads of compressed rasters can decode them
(docs/benchmarks.md, "Loader"). The chips are drawn here once, with the sampler, quality control
and bad-file handling of pretraining, and stored for streaming:

* ``data/``: LitData chunks (``litdata.StreamingDataset`` reads them from disk or object
  storage); each item holds ``image`` (C, H, W) in the stored dtype and its chip number, the
  chunks compressed with zstd;
* ``chips.parquet``: a GeoParquet of the chip footprints (WGS84) with their provenance: source,
  scene, date, CRS and bounds in that CRS;
* ``shards.json``: the typed record (:class:`~geopera.core.contracts.ShardSet`).

The chips are written in parts of :data:`PART` chips, each complete when its row table exists;
a killed run continues with ``--resume`` from its hidden work folder, redrawing the same stream
(the sampler is seeded) and skipping the complete parts, so no chip is written twice.
"""

import json
import os
import queue
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from geopera.archive.run import PreparedSample, SampleRequest
from geopera.core.contracts import ShardSet, ShardSource
from geopera.core.errors import GeoperaError
from geopera.core.normalisation import BandStats
from geopera.core.outputs import atomic_file, full_disk_errors, write_json
from geopera.data.identity import identify
from geopera.data.sources.model import bounds_to_wgs84, crs_label

#: Chips per part: the unit a killed run loses at most.
PART = 256
#: Chunk size of the LitData shards.
CHUNK_BYTES = "64MB"
#: Parts whose chips give the band statistics (the stream is random: the first are a sample).
STATS_PARTS = 16
#: Pixels of each chip that the statistics keep (at seeded random positions).
STATS_PIXELS = 256


@dataclass(frozen=True)
class ShardSummary:
    """What ``archive shards`` wrote.

    Attributes:
        out: The shard folder.
        shards: Its record.
        resumed_parts: Parts a resumed run found complete.
        rejected: Patches rejected by quality control before the chips were accepted.
    """

    out: Path
    shards: ShardSet
    resumed_parts: int
    rejected: int


def work_folder(out: Path) -> Path:
    """The hidden sibling where a shard folder is assembled (and a killed run continues)."""
    return out.parent / f".{out.name}.partial"


def parts_of(count: int) -> list[tuple[int, int]]:
    """The parts of ``count`` chips: (first chip, chip count) each, in order."""
    return [(first, min(PART, count - first)) for first in range(0, count, PART)]


def write_parts(
    prepared: PreparedSample,
    parts: list[tuple[int, int]],
    workers: int = 0,
    advance: Callable[[int], None] | None = None,
) -> None:
    """Write the given parts that are not complete yet (this process's share of the work).

    Args:
        prepared: The archive, sampler and dataset from :func:`~geopera.archive.run.prepare_sample`
            (every process draws the same stream of locations).
        parts: (first chip, chip count) of the parts to write.
        workers: DataLoader worker processes reading the patches (0: this process).
        advance: Called with the number of chips just written (or found complete).
    """
    request = prepared.request
    work = work_folder(request.out)
    locations = list(islice(prepared.locations, request.count))
    with full_disk_errors(work):
        for first, count in parts:
            part = work / "parts" / f"part-{first // PART:05d}"
            if not part.with_suffix(".parquet").is_file():
                _write_part(prepared, locations[first : first + count], first, part, workers)
            if advance is not None:
                advance(count)


def finish(prepared: PreparedSample, kept: int) -> ShardSummary:
    """Merge the complete parts into the shard set and rename it onto ``--out``.

    Args:
        prepared: As for :func:`write_parts`.
        kept: Parts that a killed run had completed (for the summary).

    Returns:
        What was written.
    """
    request = prepared.request
    work = work_folder(request.out)
    with full_disk_errors(work):
        stats = _source_stats(work, prepared)
        table = _merge(work, request.count)
        shards = _record(prepared, table, stats)
        shards.write(work / ShardSet.FILE)
    work.rename(request.out)
    return ShardSummary(request.out, shards, kept, int(table["rejected"].sum()))


def draw_settings(request: SampleRequest) -> dict[str, Any]:
    """What decides the chips, as JSON values: a resumed run must draw with the same."""
    keys = ("paths", "roi", "size", "count", "seed", "bands", "sources", "max_nodata")
    values: dict[str, Any] = json.loads(
        json.dumps({k: getattr(request, k) for k in keys}, default=str)
    )
    return values


def open_work(out: Path, resume: bool, settings: dict[str, Any]) -> int:
    """Make the work folder, or take a killed run's with ``--resume`` (drawn alike).

    Returns:
        The parts the killed run completed (0 for a new run).
    """
    work = work_folder(out)
    if resume and not work.is_dir():
        raise GeoperaError(
            f"--resume: there is no interrupted shard run for {out} (no {work.name} beside it); "
            "run without --resume"
        )
    if not resume and work.exists():
        raise GeoperaError(
            f"an interrupted shard run for {out} is at {work}: continue it with --resume "
            "(the same arguments), or remove that folder"
        )
    recorded = work / "settings.json"
    if resume and recorded.is_file():
        before = json.loads(recorded.read_text())
        changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
        if changed:
            listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
            raise GeoperaError(
                f"--resume draws the killed run's chips again and needs its arguments; these "
                f"differ: {listed}"
            )
    (work / "parts").mkdir(parents=True, exist_ok=True)
    write_json(recorded, settings)
    return len(list((work / "parts").glob("*.parquet")))


class _Chips:
    """The patches of one part, by position (a map-style dataset for the DataLoader)."""

    def __init__(self, dataset: Any, locations: list[Any]) -> None:
        self.dataset = dataset
        self.locations = locations

    def __len__(self) -> int:
        return len(self.locations)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.dataset[self.locations[i]])


def _read(prepared: PreparedSample, locations: list[Any], workers: int) -> Iterator[dict[str, Any]]:
    """The part's samples in order, read by ``workers`` processes."""
    from torch.utils.data import DataLoader

    loader: DataLoader[dict[str, Any]] = DataLoader(
        _Chips(prepared.dataset, locations),  # type: ignore[arg-type]
        batch_size=None,
        num_workers=workers,
        prefetch_factor=8 if workers else None,
    )
    yield from loader


@contextmanager
def _one_writer() -> Iterator[None]:
    """Make LitData's writer see itself as the only one, as inside LitData's ``optimize``.

    Under torch.distributed the writer takes the process group's rank and size and waits for
    every rank's index in its folder; a part is one process's folder, so it is told what
    ``optimize`` tells each of its workers: rank 0 of one.
    """
    names = ("DATA_OPTIMIZER_GLOBAL_RANK", "DATA_OPTIMIZER_NUM_WORKERS", "DATA_OPTIMIZER_NUM_NODES")
    saved = {n: os.environ.get(n) for n in names}
    os.environ.update(dict(zip(names, ("0", "1", "1"), strict=True)))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _write_part(
    prepared: PreparedSample, locations: list[Any], first: int, part: Path, workers: int
) -> None:
    """One part: its LitData chunks in ``part/`` and its rows in ``part.parquet`` (last)."""
    with _one_writer():
        _write_part_chunks(prepared, locations, first, part, workers)


def _write_part_chunks(
    prepared: PreparedSample, locations: list[Any], first: int, part: Path, workers: int
) -> None:
    """The body of :func:`_write_part`."""
    from litdata.streaming.writer import BinaryWriter

    shutil.rmtree(part, ignore_errors=True)  # what a killed run left of this part
    writer = BinaryWriter(
        str(part),
        chunk_bytes=CHUNK_BYTES,
        compression="zstd",
        compression_level="chunk",
        msg_queue=queue.SimpleQueue(),  # its "inferred data format" line, unread: not printed
    )
    rows: list[dict[str, Any]] = []
    pixels: dict[str, list[np.ndarray]] = {}
    dtype = np.dtype(prepared.dataset.dtype)
    sources = prepared.dataset.sources
    keep_pixels = first // PART < STATS_PARTS
    for n, sample in enumerate(_read(prepared, locations, workers)):
        chip = first + n
        image = sample["image"].numpy().astype(dtype, copy=False)  # (C, H, W)
        writer[n] = {"chip": chip, "image": image}
        sampling = sources[int(sample["source"])]
        rows.append(_provenance(sampling, sample, chip))
        if keep_pixels:
            flat = image.reshape(image.shape[0], -1)  # (C, H, W) -> (C, H*W)
            at = np.random.default_rng(chip).integers(0, flat.shape[1], STATS_PIXELS)
            pixels.setdefault(sampling.source.name, []).append(flat[:, at])  # (C, STATS_PIXELS)
    writer.done()
    writer.merge()
    import pandas as pd

    if pixels:
        with atomic_file(part.with_suffix(".npz")) as tmp, open(tmp, "wb") as fh:
            # arr_0: the source names; arr_1...: their kept pixels, (C, N) each
            np.savez(
                fh, np.array(list(pixels)), *(np.concatenate(v, axis=1) for v in pixels.values())
            )
    with atomic_file(part.with_suffix(".parquet")) as tmp:
        pd.DataFrame(rows).to_parquet(tmp)


def _provenance(sampling: Any, sample: dict[str, Any], chip: int) -> dict[str, Any]:
    """A chip's row: source, scene and date of the item under it, CRS, bounds, footprint."""
    source = sampling.source
    box = tuple(float(v) for v in sample["bounds"])
    bounds = (box[0], box[1], box[2], box[3])
    under = sampling.reader.items_at(bounds)  # the reader's vectorised lookup, not a scan
    item = source.items[under[0]] if under else source.first
    wgs84 = bounds_to_wgs84(source.crs, bounds)
    return {
        "chip": chip,
        "source": source.name,
        "scene": item.scene,
        "date": item.acquired,
        "crs": crs_label(source.crs),
        "minx": bounds[0],
        "miny": bounds[1],
        "maxx": bounds[2],
        "maxy": bounds[3],
        "lon_min": wgs84[0] if wgs84 else None,
        "lat_min": wgs84[1] if wgs84 else None,
        "lon_max": wgs84[2] if wgs84 else None,
        "lat_max": wgs84[3] if wgs84 else None,
        "rejected": int(sample["rejected"]),
    }


def _merge(work: Path, count: int) -> Any:
    """Join the parts: one LitData dataset in ``data/`` and ``chips.parquet`` (GeoParquet)."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    parts = sorted(p for p in (work / "parts").iterdir() if p.is_dir())
    data = work / "data"
    shutil.rmtree(data, ignore_errors=True)
    if len(parts) == 1:
        shutil.copytree(parts[0], data)
    else:
        from litdata.processing.functions import merge_datasets

        with open(os.devnull, "w") as quiet, redirect_stderr(quiet):  # its own progress bar
            merge_datasets([str(p) for p in parts], str(data))
    frame = pd.concat(
        [pd.read_parquet(p.with_suffix(".parquet")) for p in parts], ignore_index=True
    )
    if len(frame) != count:
        raise GeoperaError(f"the parts hold {len(frame)} chips instead of {count}; run again")
    boxes = shapely.box(frame["lon_min"], frame["lat_min"], frame["lon_max"], frame["lat_max"])
    table = gpd.GeoDataFrame(
        frame.drop(columns=["lon_min", "lat_min", "lon_max", "lat_max"]),
        geometry=boxes,
        crs="EPSG:4326",
    )
    with atomic_file(work / "chips.parquet") as tmp:
        table.to_parquet(tmp)
    shutil.rmtree(work / "parts")
    return table


def _record(
    prepared: PreparedSample, table: Any, stats: dict[str, dict[str, list[float]]]
) -> ShardSet:
    """``shards.json``: what the chips are, with each source's statistics from its chips."""
    import litdata

    request = prepared.request
    first = prepared.dataset.sources[0]
    item = first.source.first
    identities = identify(first.reader.bands, item.family, Path(item.paths[0]).stem, item.aliases)
    return ShardSet(
        count=len(table),
        size=request.size,
        dtype=str(np.dtype(prepared.dataset.dtype)),
        bands=list(first.reader.bands),
        identities=[i.to_dict() if i else None for i in identities],
        sources=[
            ShardSource(
                name=s.source.name,
                chips=int((table["source"] == s.source.name).sum()),
                stats=stats[s.source.name],
                crs=crs_label(s.source.crs),
                res=[float(r) for r in s.source.res],
            )
            for s in prepared.dataset.sources
            if s.source.name in stats
        ],
        roi={"origin": str(request.roi), "wkt_wgs84": _roi_wkt(request.roi)},
        archive=[str(p) for p in request.paths],
        seed=request.seed,
        max_nodata=request.max_nodata,
        library=f"litdata {litdata.__version__}",
    )


def _roi_wkt(roi: str) -> str:
    from geopera.data.roi import load_roi

    return load_roi(roi).wkt_wgs84


def _source_stats(work: Path, prepared: PreparedSample) -> dict[str, dict[str, list[float]]]:
    """Each source's ``BandStats`` from the pixels the first parts kept of their chips."""
    kept: dict[str, list[np.ndarray]] = {}
    for path in sorted((work / "parts").glob("*.npz")):
        with np.load(path) as stored:
            for i, name in enumerate(stored["arr_0"]):
                kept.setdefault(str(name), []).append(stored[f"arr_{i + 1}"])  # (C, N)
    out: dict[str, dict[str, list[float]]] = {}
    for sampling in prepared.dataset.sources:
        name = sampling.source.name
        if name not in kept:
            continue
        values = np.concatenate(kept[name], axis=1)  # (C, N)
        nodata = sampling.source.nodata
        valid = np.isfinite(values) if nodata is None else (values != nodata) & np.isfinite(values)
        out[name] = BandStats.of_bands(
            [band[ok] for band, ok in zip(values, valid, strict=True)]
        ).to_dict()
    return out
