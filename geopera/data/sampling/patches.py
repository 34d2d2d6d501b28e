"""Patches read at sampled locations, with quality control and survival of broken files.

:class:`PatchDataset` reads a location and applies quality control: a patch whose nodata/NaN
fraction exceeds a threshold, or that is constant, is rejected and replaced by a deterministic
fallback location of the same source; rejections are counted in the sample.

Files that break during a run (truncated, deleted, replaced with garbage) are survived: a failed
read is retried once with freshly opened files; a file that fails again is recorded in the run's
:class:`~geopera.data.sampling.badfiles.BadFiles` and never read again; its patch is replaced by
one from a readable file of the same source, or of another source when none is left. When every
source is gone the dataset raises :class:`~geopera.core.errors.ArchiveGoneError`.
"""

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import shapely
import torch
from numpy.random import default_rng
from torch import Tensor
from torch.utils.data import Dataset
from torchgeo.samplers import RandomPatchSampler

from geopera.core.errors import ArchiveGoneError, SamplingError, error_line
from geopera.data.roi import format_lonlat
from geopera.data.sampling.badfiles import BadFiles
from geopera.data.sampling.sampler import Location, SourceSampling, mix_seed
from geopera.data.sources.model import Bounds, bounds_to_wgs84
from geopera.data.sources.signing import is_forbidden


def invalid_fraction(image: np.ndarray, nodata: float | None) -> float:
    """Fraction of pixels that are NaN in any band or nodata in every band.

    Args:
        image: Patch in its raw dtype, shape (C, H, W).
        nodata: The source's nodata value, or None.

    Returns:
        A fraction in [0, 1].
    """
    bad = np.zeros(image.shape[1:], dtype=bool)  # (H, W)
    if image.dtype.kind == "f":
        bad |= np.isnan(image).any(axis=0)  # (C, H, W) -> (H, W)
    if nodata is not None and not math.isnan(nodata):
        bad |= (image == nodata).all(axis=0)
    return float(bad.mean())


def is_constant(image: np.ndarray) -> bool:
    """Whether every band of the patch holds a single value (ignoring NaN).

    Args:
        image: Patch in its raw dtype, shape (C, H, W).

    Returns:
        True when the patch carries no spatial signal.
    """
    flat = image.reshape(image.shape[0], -1)  # (C, H, W) -> (C, H*W)
    if flat.dtype.kind == "f":
        if np.isnan(flat).all():
            return True
        return bool((np.nanmax(flat, axis=1) <= np.nanmin(flat, axis=1)).all())
    return bool((flat.max(axis=1) == flat.min(axis=1)).all())


#: Stored dtypes that travel from the workers as they are (torch has a tensor type for each).
TRANSFER_DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "float32")


def transfer_dtype(dtypes: Iterable[str]) -> np.dtype[Any]:
    """The dtype patches travel in from the workers to the device: the stored one.

    Converting to float32 happens on the device; a uint16 batch crosses to it at half the bytes
    of float32 (uint8: a quarter). Sources of different dtypes share the smallest type that holds
    them all (uint8 + uint16: uint16; int16 + uint16: int32); anything torch has no tensor type
    for, or a float, travels as float32.

    Args:
        dtypes: The sources' stored dtypes.

    Returns:
        The dtype.
    """
    found = [np.dtype(d) for d in dtypes]
    common = np.result_type(*found) if found else np.dtype("float32")
    return common if common.name in TRANSFER_DTYPES else np.dtype("float32")


class PatchDataset(Dataset[dict[str, Tensor]]):
    """Reads patches at sampler locations, with quality control and deterministic fallbacks.

    Args:
        sources: Prepared sources (same order as the sampler's).
        patch_size: Patch size in pixels.
        seed: Base seed for fallback locations.
        max_invalid: Largest accepted nodata/NaN fraction.
        max_attempts: Reads per sample before giving up.
        bad_files: The run's record of unreadable files (default: in memory).
        dtype: dtype of the returned images (default: :func:`transfer_dtype` of the sources):
            the stored values, exactly, in the smallest type that holds every source's.
    """

    def __init__(
        self,
        sources: Sequence[SourceSampling],
        patch_size: int,
        seed: int = 0,
        max_invalid: float = 0.1,
        max_attempts: int = 16,
        bad_files: BadFiles | None = None,
        dtype: np.dtype[Any] | None = None,
    ) -> None:
        if not 0.0 <= max_invalid < 1.0:
            raise ValueError(f"max_invalid must be in [0, 1), got {max_invalid}")
        self.sources = list(sources)
        self.patch_size = patch_size
        self.seed = seed
        self.max_invalid = max_invalid
        self.max_attempts = max_attempts
        self.bad_files = bad_files if bad_files is not None else BadFiles()
        self.dtype = dtype if dtype is not None else transfer_dtype(s.source.dtype for s in sources)
        self._synced: dict[int, int] = {}  # per source: how many bad files it has seen

    def __len__(self) -> int:  # pragma: no cover - indexed by sampler locations only
        raise TypeError("PatchDataset is indexed by sampler locations; it has no length")

    def _fallback(self, src: int, stream_index: int, attempt: int) -> Bounds:
        s = self.sources[src]
        if s.reader.excluded:
            return self._readable_box(src, mix_seed(self.seed, 7919, stream_index, attempt))
        sampler = RandomPatchSampler(
            s.reader.dataset,
            size=self.patch_size,
            length=1,
            roi=s.roi,
            generator=mix_seed(self.seed, 7919, stream_index, attempt),
        )
        x, y = next(iter(sampler))
        return (float(x.start), float(y.start), float(x.stop), float(y.stop))

    def _readable_box(self, src: int, seed: int) -> Bounds:
        """A patch inside the ROI and inside one readable item, on that item's pixel grid."""
        reader = self.sources[src].reader
        good = [i for i in range(reader.n_items) if i not in reader.excluded]
        rng = default_rng(seed)
        rx, ry = reader.res
        w, h = self.patch_size * rx, self.patch_size * ry
        for _ in range(64):
            b = reader.item_bounds(good[int(rng.integers(len(good)))])
            cols = round((b[2] - b[0]) / rx) - self.patch_size
            rows = round((b[3] - b[1]) / ry) - self.patch_size
            if cols < 0 or rows < 0:
                continue
            x0 = b[0] + int(rng.integers(cols + 1)) * rx
            y1 = b[3] - int(rng.integers(rows + 1)) * ry
            box = (x0, y1 - h, x0 + w, y1)
            if shapely.contains(self.sources[src].roi, shapely.box(*box)):
                return box
        raise SamplingError(f"no readable {self.patch_size}-px patch left in the ROI")

    def _sync_bad(self, src: int) -> None:
        """Exclude the items of a source that any process of the run found bad (when new)."""
        known = self.bad_files.known()
        if self._synced.get(src) == len(known):
            return
        self._synced[src] = len(known)
        reader = self.sources[src].reader
        for i in range(reader.n_items):
            if i not in reader.excluded and any(p in known for p in reader.item_paths(i)):
                reader.excluded.add(i)

    def _alive(self, src: int) -> bool:
        self._sync_bad(src)
        reader = self.sources[src].reader
        return len(reader.excluded) < reader.n_items

    def _aligned(self, src: int, box: Bounds) -> Bounds:
        """A patch moved onto its file's internal tiles, when it stays inside the ROI."""
        moved = self.sources[src].reader.align(box)
        if moved != box and shapely.contains(self.sources[src].roi, shapely.box(*moved)):
            return moved
        return box

    def _read(self, src: int, box: Bounds) -> np.ndarray | None:
        """Read a box; on failure retry once with fresh handles, then record the bad files.

        A 403 (an expired signed URL) signs the box's items again before the retry.

        Returns:
            The patch, or None when the box touched a file that is (now) known bad.
        """
        reader = self.sources[src].reader
        if (
            reader.excluded
            and any(i in reader.excluded for i in reader.items_at(box))
            and reader.fast_item(*box) is None  # no readable item holds the whole box
        ):
            return None
        try:
            return reader.read(*box)
        except Exception as first:
            if is_forbidden(first):  # an expired signature: signed again, then read once more
                reader.resign(reader.items_at(box))
            reader.reset()
            try:
                return reader.read(*box)
            except Exception as second:
                error = error_line(second) or repr(first)
        suspects = reader.items_at(box)
        checks = {i: reader.check_item(i, box) for i in suspects}
        bad = [i for i, found in checks.items() if found is not None] or suspects
        error = next((found for found in checks.values() if found is not None), error)
        paths = [p for i in bad for p in reader.item_paths(i)]
        self.bad_files.mark(paths, error)
        reader.excluded.update(bad)
        reader.reset()
        return None

    def __getitem__(self, location: Location) -> dict[str, Tensor]:
        """Read the patch at a location (or a fallback location after rejections).

        Args:
            location: ``(source index, xmin, ymin, xmax, ymax, stream index)``.

        Returns:
            ``image`` (C, H, W) raw values in :attr:`dtype`, ``source`` (), ``bounds`` (4,) in the
            source CRS, ``rejected`` () number of rejected reads before this one.

        Raises:
            SamplingError: If every attempt was rejected (the ROI is mostly nodata).
            ArchiveGoneError: If every file of every source has become unreadable.
        """
        src, xmin, ymin, xmax, ymax, k = location
        box: Bounds = (xmin, ymin, xmax, ymax)
        if self.bad_files.known() and not self._alive(src):
            src, box = self._other_source(src, k)
        attempt = 0
        misses = 0  # reads that met a bad file (bounded: a fresh box each time)
        while attempt < self.max_attempts:
            box = self._aligned(src, box)
            image = self._read(src, box)
            if image is None:  # a bad file: not the data's fault, so not a rejection
                misses += 1
                if misses > 16 * self.max_attempts:
                    raise SamplingError(
                        f"{misses} patches in a row of source {self.sources[src].source.name!r} "
                        "touched unreadable files; see the problems of the run and repair or "
                        "remove those files"
                    )
                if not self._alive(src):
                    src, box = self._other_source(src, k)
                else:
                    box = self._readable_box(src, mix_seed(self.seed, 104729, k, attempt, misses))
                continue
            reader = self.sources[src].reader
            valid = invalid_fraction(image, reader.nodata) <= self.max_invalid
            if valid and not is_constant(image):
                return {
                    "image": torch.from_numpy(image.astype(self.dtype, copy=False)),
                    "source": torch.tensor(src),
                    "bounds": torch.tensor(box, dtype=torch.float64),
                    "rejected": torch.tensor(attempt),
                }
            box = self._fallback(src, k, attempt)
            attempt += 1
        name = self.sources[src].source.name
        raise SamplingError(
            f"{self.max_attempts} patches in a row from source {name!r} were nodata/NaN above "
            f"{self.max_invalid:.0%} or constant: the ROI is mostly nodata there "
            f"({format_lonlat(bounds_to_wgs84(self.sources[src].source.crs, box))}). Move the ROI "
            "onto valid data or raise the nodata threshold."
        )

    def _other_source(self, src: int, k: int) -> tuple[int, Bounds]:
        """A readable source in place of a gone one (the next alive after ``src``)."""
        n = len(self.sources)
        for j in range(1, n + 1):
            other = (src + j) % n
            if self._alive(other):
                return other, self._readable_box(other, mix_seed(self.seed, 15485863, k, other))
        files = sorted({r["path"] for r in self.bad_files.records()} or self.bad_files.known())
        raise ArchiveGoneError(
            f"every file of every source became unreadable during the run ({len(files)} files, "
            f"e.g. {files[0] if files else '?'}); see the run's problems.jsonl"
        )
