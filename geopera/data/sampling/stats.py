"""Per-source, per-band statistics estimated from patches inside the ROI, cached as JSON.

The statistics (:class:`~geopera.transforms.normalise.BandStats`: 2nd/98th percentiles, mean
and std of the scaled values) use the valid pixels of the sampled patches (nodata and NaN
excluded), a seeded subset of at most ``max_values`` per band. The cache key covers the files
(path, size, mtime), the bands, the ROI, the patch size, the number of patches and the seed.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.random import default_rng
from torchgeo.samplers import RandomPatchSampler

from geopera.core.cache import cache_dir
from geopera.core.normalisation import BandStats
from geopera.core.outputs import write_json
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import SourceSampling

#: 2: scaled, clamped moments (:class:`BandStats`); 1 had raw moments.
STATS_VERSION = 2


def default_cache_dir() -> Path:
    """``$GEOPERA_CACHE/stats``, else ``$XDG_CACHE_HOME/geopera/stats`` (``~/.cache``)."""
    return cache_dir("stats")


def _cache_key(sources: Sequence[SourceSampling], patch_size: int, patches: int, seed: int) -> str:
    parts: list[Any] = [STATS_VERSION, patch_size, patches, seed]
    for s in sources:
        files = []
        for f in s.source.files:
            st = os.stat(f) if not f.startswith("/vsi") else None
            files.append([f, st.st_size if st else 0, int(st.st_mtime) if st else 0])
        parts.append([s.source.name, s.reader.bands, s.roi.wkt, files])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SourceStats:
    """The statistics of one source.

    Attributes:
        bands: Band names, in the order of the statistics.
        stats: The per-band statistics.
        patches: Patches they were estimated from.
        pixels: Valid pixels seen per band.
    """

    bands: tuple[str, ...]
    stats: BandStats
    patches: int
    pixels: tuple[int, ...]


@dataclass(frozen=True)
class ArchiveStats:
    """The statistics of every source, as cached (``STATS_VERSION``).

    Attributes:
        key: The cache key (files, bands, ROI, patch size, patches, seed).
        sources: Statistics by source name.
    """

    key: str
    sources: dict[str, SourceStats]

    def to_dict(self) -> dict[str, Any]:
        """The cached JSON form."""
        return {
            "version": STATS_VERSION,
            "key": self.key,
            "sources": {
                name: {
                    "bands": [*s.bands],
                    **s.stats.to_dict(),
                    "patches": s.patches,
                    "pixels": [*s.pixels],
                }
                for name, s in self.sources.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchiveStats":
        """Read the cached JSON form.

        Args:
            data: What :meth:`to_dict` wrote.

        Returns:
            The statistics.
        """
        return cls(
            key=str(data["key"]),
            sources={
                name: SourceStats(
                    tuple(s["bands"]),
                    BandStats.from_dict(s),
                    int(s["patches"]),
                    tuple(int(c) for c in s["pixels"]),
                )
                for name, s in data["sources"].items()
            },
        )


def _valid_values(sample: dict[str, Any], nodata: float | None) -> list[np.ndarray]:
    """Each band's valid values of one patch (NaN and nodata left out)."""
    image = sample["image"].double()  # (C, H, W)
    out = []
    for c in range(image.shape[0]):
        band = image[c].flatten()
        valid = ~torch.isnan(band)
        if nodata is not None:
            valid &= band != nodata
        out.append(band[valid].numpy())
    return out


def _source_stats(
    reader: PatchDataset,
    index: int,
    source: SourceSampling,
    patch_size: int,
    patches: int,
    seed: int,
    max_values: int,
) -> SourceStats:
    sampler = RandomPatchSampler(
        source.reader.dataset, size=patch_size, length=patches, roi=source.roi, generator=seed
    )
    kept: list[list[np.ndarray]] = [[] for _ in source.reader.bands]
    for k, (x, y) in enumerate(sampler):
        sample = reader[(index, x.start, y.start, x.stop, y.stop, k)]
        for c, values in enumerate(_valid_values(sample, source.reader.nodata)):
            kept[c].append(values)
    rng = default_rng(seed)
    bands, pixels = [], []
    for values_list in kept:
        values = np.concatenate(values_list) if values_list else np.zeros(0)
        pixels.append(int(values.size))
        if values.size > max_values:
            values = rng.choice(values, size=max_values, replace=False)
        bands.append(values)
    return SourceStats(
        tuple(source.reader.bands), BandStats.of_bands(bands), patches, tuple(pixels)
    )


def estimate_stats(
    sources: Sequence[SourceSampling],
    patch_size: int,
    patches: int = 32,
    seed: int = 0,
    max_invalid: float = 0.1,
    max_values: int = 200_000,
    cache_dir: Path | None = None,
) -> ArchiveStats:
    """Estimate (or load cached) band statistics for each source.

    Args:
        sources: Prepared sources.
        patch_size: Patch size in pixels.
        patches: Patches per source.
        seed: Seed of the patch locations.
        max_invalid: Nodata fraction above which a patch is rejected.
        max_values: Valid pixels per band (a seeded subset) the statistics are computed from.
        cache_dir: Cache folder (default :func:`default_cache_dir`); the JSON is written
            atomically.

    Returns:
        The statistics of every source.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(sources, patch_size, patches, seed)
    path = cache_dir / f"{key}.json"
    if path.is_file():
        return ArchiveStats.from_dict(json.loads(path.read_text()))
    reader = PatchDataset(sources, patch_size, seed=seed, max_invalid=max_invalid)
    result = ArchiveStats(
        key,
        {
            s.source.name: _source_stats(reader, i, s, patch_size, patches, seed, max_values)
            for i, s in enumerate(sources)
        },
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, result.to_dict())
    return result
