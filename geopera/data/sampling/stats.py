"""Per-source, per-band statistics estimated from patches inside the ROI, cached as JSON.

Mean and standard deviation use every valid pixel of the sampled patches (nodata and NaN
excluded); the 2nd and 98th percentiles use an evenly strided subset of at most
``max_values`` pixels per band. The cache key covers the files (path, size, mtime), the bands,
the ROI, the patch size, the number of patches and the seed.
"""

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.random import default_rng
from torchgeo.samplers import RandomPatchSampler

from geopera.core.cache import cache_dir
from geopera.core.outputs import write_json
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import SourceSampling

STATS_VERSION = 1


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


def estimate_stats(
    sources: Sequence[SourceSampling],
    patch_size: int,
    patches: int = 32,
    seed: int = 0,
    max_invalid: float = 0.1,
    max_values: int = 200_000,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Estimate (or load cached) band statistics for each source.

    Args:
        sources: Prepared sources.
        patch_size: Patch size in pixels.
        patches: Patches per source.
        seed: Seed of the patch locations.
        max_invalid: Nodata fraction above which a patch is rejected.
        max_values: Pixels per band kept for the percentiles.
        cache_dir: Cache folder (default :func:`default_cache_dir`); the JSON is written
            atomically.

    Returns:
        ``{"key": str, "sources": {name: {"bands", "mean", "std", "p2", "p98", "patches",
        "pixels"}}}``.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = _cache_key(sources, patch_size, patches, seed)
    path = cache_dir / f"{key}.json"
    if path.is_file():
        cached: dict[str, Any] = json.loads(path.read_text())
        return cached
    reader = PatchDataset(sources, patch_size, seed=seed, max_invalid=max_invalid)
    result: dict[str, Any] = {"key": key, "sources": {}}
    for i, s in enumerate(sources):
        sampler = RandomPatchSampler(
            s.reader.dataset, size=patch_size, length=patches, roi=s.roi, generator=seed
        )
        count = np.zeros(len(s.reader.bands))
        total = np.zeros(len(s.reader.bands))
        total_sq = np.zeros(len(s.reader.bands))
        kept: list[list[np.ndarray]] = [[] for _ in s.reader.bands]
        for k, (x, y) in enumerate(sampler):
            sample = reader[(i, x.start, y.start, x.stop, y.stop, k)]
            image = sample["image"].double()  # (C, H, W)
            for c in range(image.shape[0]):
                band = image[c].flatten()
                valid = ~torch.isnan(band)
                if s.reader.nodata is not None:
                    valid &= band != s.reader.nodata
                values = band[valid].numpy()
                count[c] += values.size
                total[c] += values.sum()
                total_sq[c] += np.square(values).sum()
                kept[c].append(values)
        mean = total / np.maximum(count, 1)
        var = np.maximum(total_sq / np.maximum(count, 1) - mean**2, 0.0)
        rng = default_rng(seed)
        p2, p98 = [], []
        for values_list in kept:
            values = np.concatenate(values_list) if values_list else np.zeros(1)
            if values.size > max_values:
                values = rng.choice(values, size=max_values, replace=False)
            lo, hi = np.percentile(values, [2, 98])
            p2.append(float(lo))
            p98.append(float(hi))
        result["sources"][s.source.name] = {
            "bands": list(s.reader.bands),
            "mean": [float(m) for m in mean],
            "std": [float(math.sqrt(v)) if v > 0 else 1.0 for v in var],
            "p2": p2,
            "p98": p98,
            "patches": patches,
            "pixels": [int(c) for c in count],
        }
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, result)
    return result
