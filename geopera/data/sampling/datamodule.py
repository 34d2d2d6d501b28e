"""The Lightning data module for pretraining: ROI patches from an archive, read in workers.

Batches are dicts: ``image`` (B, C, H, W) raw pixel values in their stored dtype (uint8, uint16,
int16...: see :func:`~geopera.data.sampling.patches.transfer_dtype`), ``source`` (B,) source index,
``bounds`` (B, 4) patch bounds in the source CRS, ``rejected`` (B,) rejected reads per sample.
On CUDA the workers' batches are pinned, so the copy to the device does not block the host.
No augmentation happens here: conversion to float, scaling, views and normalisation run on the
device.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from geopera.core.identity import BandIdentity, rgb_indices
from geopera.core.normalisation import Normalisation
from geopera.data.identity import identify
from geopera.data.roi import ROI, load_roi
from geopera.data.sampling.badfiles import BadFiles
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import (
    MixedPatchSampler,
    SourceSampling,
    prepare_sources,
    source_weights,
)
from geopera.data.sampling.stats import ArchiveStats, estimate_stats
from geopera.data.sources.discover import discover
from geopera.data.sources.model import Archive
from geopera.data.sources.remote import BlockCache


def collate_patches(samples: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Stack samples into a batch.

    Args:
        samples: Samples from :class:`~geopera.data.sampling.patches.PatchDataset`.

    Returns:
        The batch (see module docstring).
    """
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


@dataclass
class SamplingSettings:
    """How patches are drawn: the defaults of :class:`PretrainDataModule` and of pretraining.

    The ``data`` section of a pretraining config extends this record, so each default is
    written once.

    Attributes:
        bands: Band names, 1-based indices or a preset (``"rgb"``); None for all bands.
        sources: Source names to restrict to; None for all.
        patch_size: Patch size in pixels.
        batch_size: Patches per batch (per rank).
        num_workers: DataLoader workers.
        seed: Sampling seed.
        max_invalid: Largest accepted nodata/NaN fraction of a patch.
        stats_patches: Patches per source for the band statistics.
        cache: Folder for tiles fetched from remote items (STAC assets, URLs), or None.
        cache_gb: Size limit of that folder, in GB (oldest tiles evicted first).
    """

    bands: list[str] | str | None = None
    sources: list[str] | None = None
    patch_size: int = 224
    batch_size: int = 8
    num_workers: int = 2
    seed: int = 0
    max_invalid: float = 0.1
    stats_patches: int = 32
    cache: str | None = None
    cache_gb: float = 20.0


class PretrainDataModule(L.LightningDataModule):
    """ROI patches from a multi-source archive.

    Args:
        archive: Archive folders, files or GDAL virtual paths.
        roi: ROI file, WKT or bbox (see :func:`~geopera.data.roi.load_roi`).
        bands: Band names, 1-based indices or a preset (``"rgb"``); None for all bands.
        sources: Source names to restrict to; None for all.
        patch_size: Patch size in pixels.
        batch_size: Patches per batch (per rank).
        samples_per_epoch: Patches per epoch over all ranks.
        num_workers: DataLoader workers.
        seed: Sampling seed.
        max_invalid: Largest accepted nodata/NaN fraction of a patch.
        weights: Source mixing weights (default: area inside the ROI, in pixels).
        stats_patches: Patches per source for the band statistics.
        stats_cache: Cache folder for statistics.
        cache: Folder for tiles fetched from remote items (STAC assets, URLs), or None.
        cache_gb: Size limit of that folder, in GB (oldest tiles evicted first).
    """

    def __init__(
        self,
        archive: Sequence[str | Path],
        roi: str | Path,
        bands: Sequence[str] | str | None = SamplingSettings.bands,
        sources: Sequence[str] | None = SamplingSettings.sources,
        patch_size: int = SamplingSettings.patch_size,
        batch_size: int = SamplingSettings.batch_size,
        samples_per_epoch: int = 1024,
        num_workers: int = SamplingSettings.num_workers,
        seed: int = SamplingSettings.seed,
        max_invalid: float = SamplingSettings.max_invalid,
        weights: Sequence[float] | None = None,
        stats_patches: int = SamplingSettings.stats_patches,
        stats_cache: str | Path | None = None,
        cache: str | Path | None = SamplingSettings.cache,
        cache_gb: float = SamplingSettings.cache_gb,
    ) -> None:
        super().__init__()
        if patch_size < 1 or batch_size < 1 or samples_per_epoch < 1 or num_workers < 0:
            raise ValueError(
                "patch_size, batch_size and samples_per_epoch must be >= 1 and num_workers >= 0; "
                f"got {patch_size}, {batch_size}, {samples_per_epoch}, {num_workers}"
            )
        self.archive_paths = [str(p) for p in archive]
        self.roi_spec = str(roi)
        self.bands = bands
        self.source_names = sources
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.num_workers = num_workers
        self.seed = seed
        self.max_invalid = max_invalid
        self.weights = weights
        self.stats_patches = stats_patches
        self.stats_cache = Path(stats_cache) if stats_cache else None
        if cache_gb <= 0:
            raise ValueError(f"the tile cache size must be > 0 GB, got {cache_gb}")
        self.tile_cache = BlockCache(Path(cache), int(cache_gb * 1e9)) if cache else None
        self.archive: Archive | None = None
        self.roi: ROI | None = None
        self.sources: list[SourceSampling] = []
        self.stats = ArchiveStats(key="", sources={})
        self.sampler: MixedPatchSampler | None = None
        #: Batches this rank already consumed (set when resuming a run).
        self.resume_batches = 0
        #: Files found unreadable during the run (pretraining points it at the run's file).
        self.bad_files = BadFiles()

    def prepare(self) -> None:
        """Discover the archive, read the ROI, choose sources and bands, estimate statistics.

        Safe to call more than once; later calls do nothing.
        """
        if self.sources:
            return
        self.roi = load_roi(self.roi_spec)
        self.archive = discover(self.archive_paths, roi=self.roi)
        chosen = self.archive.select(self.bands, self.source_names, roi=self.roi)
        self.sources = prepare_sources(chosen, self.roi, self.patch_size, cache=self.tile_cache)
        self.stats = estimate_stats(
            self.sources,
            self.patch_size,
            patches=self.stats_patches,
            seed=self.seed,
            max_invalid=self.max_invalid,
            cache_dir=self.stats_cache,
        )

    @property
    def in_chans(self) -> int:
        """Number of bands per patch."""
        self.prepare()
        return len(self.sources[0].reader.bands)

    @property
    def band_names(self) -> list[str]:
        """Band names of the first source (all sources have the same count)."""
        self.prepare()
        return list(self.sources[0].reader.bands)

    @property
    def sampled_sources(self) -> list[str]:
        """The chosen sources' names, in sampling order."""
        self.prepare()
        return [s.source.name for s in self.sources]

    def mix_weights(self) -> list[float]:
        """The sources' sampling weights (how often each is drawn)."""
        self.prepare()
        return [float(w) for w in source_weights(self.sources, self.weights)]

    def rgb(self) -> list[int] | None:
        """Indices of the red, green and blue bands of the first source, by identity, or None.

        Bands of no known identity named ``1, 2, 3(, 4)`` are taken as RGB(N) imagery.
        """
        self.prepare()
        first = self.sources[0]
        item = first.source.first
        found = identify(first.reader.bands, item.family, Path(item.paths[0]).stem, item.aliases)
        if any(found):
            return rgb_indices(found)
        generic = list(self.band_names[:3]) == ["1", "2", "3"] and len(self.band_names) in (3, 4)
        return [0, 1, 2] if generic else None

    def band_identities(self) -> list[BandIdentity | None] | None:
        """What each input band measures, from the first source that identifies them all.

        Returns:
            One identity per band of :attr:`band_names`, or None when no source knows them.
        """
        self.prepare()
        for sampling in self.sources:
            item = sampling.source.first
            stem = Path(item.paths[0]).stem
            found = identify(sampling.reader.bands, item.family, stem, item.aliases)
            if all(found):
                return found
        return None

    def normalisation(self) -> Normalisation:
        """The normalisation pretraining applies on the device, from the archive statistics.

        Raw values are scaled per source to [0, 1] with the 2nd/98th percentiles, then
        standardised with the mean/std of the scaled data, averaged over sources by sampling
        weight (:meth:`geopera.transforms.normalise.Normalisation.mix`).

        Returns:
            The normalisation.
        """
        self.prepare()
        stats = {s.source.name: self.stats.sources[s.source.name].stats for s in self.sources}
        return Normalisation.mix(stats, list(source_weights(self.sources, self.weights)))

    def setup(self, stage: str | None = None) -> None:
        """Build the rank-aware sampler (rank and world size from the attached trainer).

        Args:
            stage: Lightning stage (unused).
        """
        self.prepare()
        rank, world = 0, 1
        if self.trainer is not None:
            rank, world = self.trainer.global_rank, self.trainer.world_size
        self.sampler = MixedPatchSampler(
            self.sources,
            self.patch_size,
            self.samples_per_epoch,
            source_weights(self.sources, self.weights),
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        self.sampler.start_index = self.resume_batches * self.batch_size

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Batches of raw patches; reads happen in the workers."""
        if self.sampler is None:
            self.setup("fit")
        assert self.sampler is not None  # for mypy: set by setup
        dataset = PatchDataset(
            self.sources,
            self.patch_size,
            seed=self.seed,
            max_invalid=self.max_invalid,
            bad_files=self.bad_files,
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.num_workers,
            collate_fn=collate_patches,
            pin_memory=self._on_cuda(),
            persistent_workers=False,
            drop_last=True,
        )

    def _on_cuda(self) -> bool:
        """Whether the attached trainer trains on CUDA (then batches are pinned)."""
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def describe(self) -> dict[str, Any]:
        """The inventory of what is sampled: sources, bands, ROI, problems, statistics."""
        self.prepare()
        assert self.archive is not None
        assert self.roi is not None
        return {
            "roi": {"origin": self.roi.origin, "wkt_wgs84": self.roi.wkt_wgs84},
            "sources": [
                {**s.source.describe(), "selected_bands": s.reader.bands, "roi_area": s.area}
                for s in self.sources
            ],
            "problems": [{"path": p.path, "reason": p.reason} for p in self.archive.problems],
            "stats": self.stats,
        }
