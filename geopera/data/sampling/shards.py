"""Pretraining from chip shards (``geopera archive shards``): a LitData stream, no raster reads.

Batches are those of :class:`~geopera.data.sampling.datamodule.PretrainDataModule`: ``image``
(B, C, H, W) in the stored dtype, ``source`` (B,) the index of the chip's source in
``shards.json``, ``bounds`` (B, 4) in that source's CRS and ``rejected`` (B,) zeros (quality
control ran when the shards were written). The statistics come from ``shards.json``. LitData's
``StreamingDataset`` splits the chips over ranks and workers, shuffles chunks and chips within
them by seed and epoch, and reads local folders or ``s3://``, ``gs://`` and ``https://``
prefixes through its own cache. Its loader is stateful: Lightning saves the loader's position in
every checkpoint and restores it, so a resumed run continues the stream where it stopped.
"""

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from geopera.core.cache import cache_dir
from geopera.core.contracts import ShardSet
from geopera.core.errors import GeoperaError
from geopera.core.identity import BandIdentity, rgb_indices
from geopera.core.normalisation import Normalisation
from geopera.data.sampling.badfiles import BadFiles
from geopera.data.sampling.datamodule import PretrainDataModule, SamplingSettings


class _CacheAdvice(logging.Filter):
    """Drops LitData's advice to cache at least 25 GB, which is sized for many workers.

    A rank keeps about ``workers x 2`` chunks of 64 MB decompressed at once, so the default
    ``data.cache_gb`` of 20 leaves room to spare; the advice would be printed by every run.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "max_cache_size` is less than" not in record.getMessage()


logging.getLogger("litdata.streaming.dataset").addFilter(_CacheAdvice())


def _is_remote(location: str) -> bool:
    return "://" in location


def _boto3_for_plain_http() -> None:
    """Make LitData fetch S3 chunks with boto3 when the endpoint is plain HTTP.

    LitData fetches chunks through obstore, which it builds without ``allow_http``, so an
    S3-compatible endpoint on ``http://`` (MinIO, a local test server) fails with "builder
    error"; boto3 honours ``AWS_ENDPOINT_URL`` as it is. LitData falls back to boto3 in a
    process it counts as forked after obstore started; marking the start as another process's
    takes that path here and in the workers. HTTPS endpoints and AWS itself keep obstore.
    """
    if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        from litdata.streaming import downloader

        downloader._OBSTORE_INIT_PID = -1


def read_shard_set(location: str) -> tuple[ShardSet, str, Any]:
    """``shards.json`` and ``chips.parquet`` of a local folder or a remote prefix.

    Returns:
        The record, the SHA-256 of its file, and the chip table (pandas).

    Raises:
        GeoperaError: If the store refuses the credentials.
        FileNotFoundError: If the location holds no ``shards.json``.
    """
    import fsspec
    import pandas as pd

    base = location.rstrip("/")
    try:
        with fsspec.open(f"{base}/{ShardSet.FILE}", "rb") as fh:
            text = fh.read()
        with fsspec.open(f"{base}/chips.parquet", "rb") as fh:
            table = pd.read_parquet(fh, columns=["chip", "source", "minx", "miny", "maxx", "maxy"])
    except PermissionError as err:
        raise GeoperaError(
            f"--shards {location}: access denied ({err}); check the credentials (AWS_ACCESS_KEY_ID"
            "/AWS_SECRET_ACCESS_KEY or AWS_PROFILE; GOOGLE_APPLICATION_CREDENTIALS for gs://)"
        ) from err
    except (FileNotFoundError, OSError, ImportError) as err:  # ImportError: no gcsfs for gs://
        raise FileNotFoundError(
            f"--shards {location}: no readable {ShardSet.FILE} and chips.parquet there ({err}); "
            "give the --out folder of `geopera archive shards` (or its copy in object storage)"
        ) from err
    shards = ShardSet.from_json(text.decode(), f"{base}/{ShardSet.FILE}")
    return shards, hashlib.sha256(text).hexdigest(), table


class ChipToSample:
    """Turns a stored chip into a pretraining sample (LitData's per-item ``transform``).

    Args:
        sources: (N,) source index of each chip.
        bounds: (N, 4) chip bounds in their source's CRS.
    """

    def __init__(self, sources: np.ndarray, bounds: np.ndarray) -> None:
        self.sources = torch.from_numpy(sources.astype(np.int64))
        self.bounds = torch.from_numpy(bounds.astype(np.float64))

    def __call__(self, item: dict[str, Any]) -> dict[str, Tensor]:
        """The sample of one stored item (``chip`` and ``image``)."""
        chip = int(item["chip"])
        return {
            "image": torch.from_numpy(np.ascontiguousarray(item["image"])),  # (C, H, W)
            "source": self.sources[chip],
            "bounds": self.bounds[chip],
            "rejected": torch.tensor(0),
        }


class ShardDataModule(L.LightningDataModule):
    """Pretraining batches streamed from a shard set (see the module docstring).

    Args:
        location: The shard folder, or an ``s3://``, ``gs://`` or ``https://`` prefix.
        settings: Batch size, workers and seed; ``cache`` and ``cache_gb``: where and how much
            of a remote shard set is kept on the local disk (the other fields are for archives).
        probe: The run's kNN probe, which shards cannot feed (its chips are read from rasters).

    Raises:
        FileNotFoundError: If a local shard folder does not exist.
        GeoperaError: If a probe is asked for.
    """

    def __init__(self, location: str, settings: SamplingSettings, probe: str | None = None) -> None:
        super().__init__()
        if probe:
            raise GeoperaError("--probe needs --archive: the probe's chips are read from rasters")
        local = not _is_remote(str(location))
        self.location = str(Path(location).resolve()) if local else str(location).rstrip("/")
        self.batch_size = settings.batch_size
        self.num_workers = settings.num_workers
        self.seed = settings.seed
        self.cache = settings.cache
        self.cache_bytes = int(settings.cache_gb * 1e9)
        if local and not Path(self.location).is_dir():
            raise FileNotFoundError(
                f"--shards {location} does not exist: give the --out folder of "
                "`geopera archive shards`"
            )
        self.stats, self.digest, self.table = read_shard_set(self.location)
        #: Batches already trained (a resumed run restores the loader's position instead).
        self.resume_batches = 0
        self.bad_files = BadFiles()

    def prepare(self) -> None:
        """Nothing to discover: ``shards.json`` was read when the module was made."""

    def setup(self, stage: str | None = None) -> None:
        """Nothing to set up: LitData splits the chips over ranks when the loader starts.

        Args:
            stage: Lightning stage (unused).
        """

    @property
    def band_names(self) -> list[str]:
        """The chips' bands, in order."""
        return list(self.stats.bands)

    def rgb(self) -> list[int] | None:
        """Indices of the red, green and blue bands, by their recorded identities, or None."""
        return rgb_indices(self.stats.band_identities())

    @property
    def sampled_sources(self) -> list[str]:
        """The sources' names, in ``shards.json``'s order."""
        return [s.name for s in self.stats.sources]

    def band_identities(self) -> list[BandIdentity | None] | None:
        """What each band measures, as recorded when the shards were written."""
        found = self.stats.band_identities()
        return found if all(found) else None

    def mix_weights(self) -> list[float]:
        """Each source's share of the chips: how often the stream shows it."""
        return [float(s.chips) for s in self.stats.sources]

    def normalisation(self) -> Normalisation:
        """The normalisation of the sources' statistics from ``shards.json``."""
        stats = {s.name: s.band_stats() for s in self.stats.sources}
        return Normalisation.mix(stats, self.mix_weights())

    def train_dataloader(self) -> Any:
        """LitData's loader over the stream (Lightning restores its position on a resume)."""
        from litdata import StreamingDataLoader, StreamingDataset

        if self.location.startswith("s3://"):
            _boto3_for_plain_http()
        order = {name: i for i, name in enumerate(self.sampled_sources)}
        table = self.table.sort_values("chip")
        to_sample = ChipToSample(
            table["source"].map(order).to_numpy(),
            table[["minx", "miny", "maxx", "maxy"]].to_numpy(),
        )
        stream = StreamingDataset(
            self._data_url(),
            shuffle=True,
            seed=self.seed,
            drop_last=True,
            cache_dir=self.cache or str(self._default_cache()),
            max_cache_size=self.cache_bytes,
            transform=to_sample,
        )
        return StreamingDataLoader(
            stream, batch_size=self.batch_size, num_workers=self.num_workers, drop_last=True
        )

    def _data_url(self) -> str:
        """The chunks' location for LitData; a local folder is read like a remote one.

        Each chunk is one zstd file that LitData decompresses into its cache before reading;
        given a plain local folder it would decompress in place and delete the compressed
        chunk, changing the shard set. ``local:`` makes it copy the chunk into the cache first.
        """
        data = f"{self.location}/{self.stats.data}"
        return data if _is_remote(self.location) else f"local:{data}"

    def _default_cache(self) -> Path:
        """The cache of this shard set when ``data.cache`` names none (one per location)."""
        key = hashlib.sha256(self.location.encode()).hexdigest()[:16]
        return cache_dir("shards") / key

    def describe(self) -> dict[str, Any]:
        """What is streamed: the shard set, its ROI and sources (as the backbone card lists)."""
        return {
            "roi": self.stats.roi,
            "sources": [
                {
                    "name": s.name,
                    "crs": s.crs,
                    "res": s.res,
                    "bands": self.band_names,
                    "dtype": self.stats.dtype,
                    "selected_bands": self.band_names,
                    "files": [],
                    "chips": s.chips,
                }
                for s in self.stats.sources
            ],
            "problems": [],
            "shards": {"location": self.location, "sha256": self.digest},
        }


#: Where pretraining batches come from: an archive sampled live, or shards streamed.
PretrainData = PretrainDataModule | ShardDataModule

__all__ = ["ChipToSample", "PretrainData", "ShardDataModule", "read_shard_set"]
