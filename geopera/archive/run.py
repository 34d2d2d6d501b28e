"""``geopera archive``: inspect an archive, or write random ROI patches of it as GeoTIFF chips.

Both read the archive the way pretraining does (:func:`~geopera.data.sources.discover.discover`,
the ROI, the band selection and the patch sampler), so what they show is what a run would get.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geopera.archive.inspect import inspect_report, print_report
from geopera.core.errors import ArchiveError
from geopera.data.roi import load_roi
from geopera.data.sources.discover import discover
from geopera.data.sources.index import Progress
from geopera.data.sources.model import Archive


def inspect(
    paths: Sequence[str],
    roi: str | None,
    as_json: bool,
    reindex: bool = False,
    progress: Progress | None = None,
) -> None:
    """Print an archive's sources (with their ROI overlap) and its problem files.

    Args:
        paths: What ``--archive`` takes: folders, files, URLs, STAC documents, recipes.
        roi: Optional ROI file, WKT or bbox.
        as_json: Print the report as JSON instead of tables.
        reindex: Read every file's header again instead of reusing the archive index.
        progress: Called with ``(read, to_read)`` while headers are read.

    Raises:
        ArchiveError: If no usable source was found (after the report is printed).
    """
    region = load_roi(roi) if roi else None
    archive = discover(paths, roi=region, reindex=reindex, progress=progress)
    report = inspect_report(archive, region)
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    if not archive.sources:
        raise ArchiveError(
            f"no usable raster source under {' '.join(paths)} "
            f"({len(archive.problems)} problem files); see the problems above"
        )


@dataclass(frozen=True)
class SampleRequest:
    """What ``geopera archive sample`` writes, and from where.

    Attributes:
        paths: What ``--archive`` takes.
        roi: ROI file, WKT or bbox.
        size: Patch size in pixels.
        count: Number of chips.
        out: New output folder.
        seed: Seed of the patch stream.
        bands: Band names, 1-based indices or a preset, or None for all.
        sources: Source names to keep, or None for all.
        max_nodata: Largest nodata fraction of a chip.
        cache: Folder for tiles fetched from remote archives, or None.
        cache_gb: Size limit of ``cache``.
        reindex: Read every file's header again instead of reusing the archive index.
    """

    paths: Sequence[str]
    roi: str
    size: int
    count: int
    out: Path
    seed: int = 0
    bands: Sequence[str] | None = None
    sources: Sequence[str] | None = None
    max_nodata: float = 0.1
    cache: Path | None = None
    cache_gb: float = 20.0
    reindex: bool = False


@dataclass(frozen=True)
class SampleSummary:
    """What ``geopera archive sample`` wrote.

    Attributes:
        out: The output folder.
        chips: Chips written.
        rejected: Patches rejected by quality control on the way.
        unreadable: Items that became unreadable (with the reason), whose patches came from
            the rest.
    """

    out: Path
    chips: int
    rejected: int
    unreadable: list[str]


def _check(request: SampleRequest) -> None:
    from geopera.core.outputs import require_new_folder

    if request.size < 1 or request.count < 1:
        raise ValueError(f"--size and --count must be >= 1, got {request.size} and {request.count}")
    require_new_folder(request.out)
    if request.cache_gb <= 0:
        raise ValueError(f"--cache-gb must be > 0, got {request.cache_gb}")


def _unreadable(archive: Archive, bad: dict[str, str]) -> list[str]:
    shown = []
    for source in archive.sources:
        for item in source.items:
            hit = [p for p in (*item.paths, *item.assets) if p in bad]
            if hit:
                shown.append(f"{', '.join(item.assets or item.paths)} ({bad[hit[0]]})")
    return shown


@dataclass
class PreparedSample:
    """An archive ready to be sampled: checked request, discovered sources, dataset and stream.

    Attributes:
        request: The checked request.
        archive: The discovered archive.
        dataset: Reads patches with quality control (``PatchDataset``).
        locations: The sampler's patch locations (``MixedPatchSampler``).
    """

    request: SampleRequest
    archive: Archive
    dataset: Any
    locations: Iterator[Any]


def prepare_sample(request: SampleRequest) -> PreparedSample:
    """Check the request, discover the archive, and set up the sampler (nothing is written).

    Args:
        request: What to write, and from where.

    Returns:
        The prepared sample, for :func:`write_sample`.

    Raises:
        ArchiveError: If the archive has no usable source.
    """
    # torch/torchgeo imports take seconds: only the commands that sample pay for them.
    from geopera.data.sampling.patches import PatchDataset
    from geopera.data.sampling.sampler import MixedPatchSampler, prepare_sources, source_weights
    from geopera.data.sources.remote import BlockCache

    _check(request)
    roi = load_roi(request.roi)
    archive = discover(request.paths, roi=roi, reindex=request.reindex)
    if not archive.sources:
        raise ArchiveError(f"no usable raster source under {' '.join(request.paths)}")
    chosen = archive.select(request.bands, request.sources, roi=roi)
    cache = BlockCache(request.cache, int(request.cache_gb * 1e9)) if request.cache else None
    prepared = prepare_sources(chosen, roi, request.size, cache=cache)
    weights = source_weights(prepared, None)
    sampler = MixedPatchSampler(prepared, request.size, request.count, weights, seed=request.seed)
    dataset = PatchDataset(
        prepared, request.size, seed=request.seed, max_invalid=request.max_nodata
    )
    return PreparedSample(request, archive, dataset, iter(sampler))


def write_sample(
    prepared: PreparedSample, advance: Callable[[int], None] | None = None
) -> SampleSummary:
    """Write the prepared patches as GeoTIFF chips plus a GeoJSON index (``chips.geojson``).

    Args:
        prepared: What :func:`prepare_sample` returned.
        advance: Called with the number of chips just written.

    Returns:
        What was written.
    """
    from geopera.archive.chip_files import write_chips

    request = prepared.request
    index = write_chips(
        prepared.dataset, prepared.locations, request.out, request.count, advance=advance
    )
    features = index["features"]
    return SampleSummary(
        out=request.out,
        chips=len(features),
        rejected=sum(f["properties"]["rejected_before"] for f in features),
        unreadable=_unreadable(prepared.archive, prepared.dataset.bad_files.reasons),
    )
