"""Patch sampling inside an ROI across sources, with quality control.

Locations come from torchgeo's own samplers (``RandomPatchSampler`` for training,
``GriddedPatchSampler`` for evaluation), one per source, with ``roi=`` the ROI reprojected to the
source's CRS. :class:`MixedPatchSampler` mixes the sources by weight (default: the source's area
inside the ROI) into one stream that depends only on ``(seed, epoch)``; rank ``r`` of ``W`` takes
every W-th element, so DDP ranks draw disjoint patches, and a resumed run can skip what it already
consumed (``start_index``) and continue the same stream.

"""

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.random import SeedSequence, default_rng
from shapely.geometry import MultiPolygon, Polygon
from torch.utils.data import Sampler
from torchgeo.samplers import GriddedPatchSampler, RandomPatchSampler

from geopera.core.errors import ROIError
from geopera.data.roi import ROI, outside_error
from geopera.data.sampling.readers import SourceReader
from geopera.data.sources.model import Source
from geopera.data.sources.remote import BlockCache

#: (source index, xmin, ymin, xmax, ymax, stream index)
Location = tuple[int, float, float, float, float, int]


@dataclass
class SourceSampling:
    """One source prepared for sampling inside an ROI.

    Attributes:
        source: The source.
        reader: Its reader (torchgeo dataset + fast path).
        roi: The ROI in the source's CRS, intersected with the source footprint.
        area: Area of ``roi`` in squared CRS units.
    """

    source: Source
    reader: SourceReader
    roi: Polygon | MultiPolygon
    area: float


def prepare_sources(
    chosen: Sequence[tuple[Source, list[str]]],
    roi: ROI,
    patch_size: int,
    cache: BlockCache | None = None,
) -> list[SourceSampling]:
    """Reproject the ROI per source and keep the sources where a patch fits inside it.

    Args:
        chosen: ``(source, bands)`` pairs, as from :meth:`Archive.select`.
        roi: The region of interest.
        patch_size: Patch size in pixels.
        cache: Local cache of tiles fetched from remote items (see ``--cache``), or None.

    Returns:
        The sources that can be sampled, in the given order.

    Raises:
        ROIError: If the ROI intersects no source, or is smaller than one patch in every source
            it intersects.
    """
    prepared: list[SourceSampling] = []
    too_small: list[str] = []
    for source, bands in chosen:
        try:
            local = roi.to_crs(source.crs)
        except Exception:
            continue
        inside = local & source.footprint
        if inside.is_empty or inside.area == 0:
            continue
        rx, ry = source.res
        # torchgeo's RandomPatchSampler keeps patch centres half a patch diagonal inside the ROI
        radius = math.hypot(patch_size * rx / 2, patch_size * ry / 2)
        if shapely.buffer(inside, -radius).is_empty:
            minx, miny, maxx, maxy = inside.bounds
            too_small.append(
                f"{source.name} (ROI part {maxx - minx:.0f} x {maxy - miny:.0f} CRS units; a "
                f"patch of {patch_size * rx:.0f} x {patch_size * ry:.0f} needs room for its "
                f"diagonal, {2 * radius:.0f}, both ways)"
            )
            continue
        reader = SourceReader(source, bands, cache=cache)
        prepared.append(SourceSampling(source, reader, inside, inside.area))
    if prepared:
        return prepared
    if too_small:
        raise ROIError(
            f"ROI {roi.origin} is too small for a {patch_size}-px patch in every source it "
            f"covers: {'; '.join(too_small)}. Enlarge the ROI or use a smaller patch size "
            "(data.patch_size)."
        )
    raise outside_error(roi, [(s.name, s.bounds_wgs84) for s, _ in chosen])


def source_weights(
    sources: Sequence[SourceSampling], weights: Sequence[float] | None
) -> np.ndarray:
    """Normalised mixing weights: given, or proportional to each source's ROI area in pixels.

    Args:
        sources: The prepared sources.
        weights: Explicit weights (one per source) or None.

    Returns:
        Probabilities, shape (S,).

    Raises:
        ValueError: If the weights are malformed.
    """
    if weights is None:
        # Area in pixels, so that a 0.5 m source is not drowned by a 30 m one of equal ground.
        w = np.array([s.area / (s.source.res[0] * s.source.res[1]) for s in sources], float)
    else:
        if len(weights) != len(sources):
            raise ValueError(
                f"got {len(weights)} source weights for {len(sources)} sources "
                f"({', '.join(s.source.name for s in sources)}); give one weight per source"
            )
        w = np.asarray(weights, dtype=float)
        if (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"source weights must be >= 0 and not all 0, got {list(weights)}")
    return w / w.sum()


def mix_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (the same parts give the same seed)."""
    return int(SeedSequence(list(parts)).generate_state(1)[0])


class MixedPatchSampler(Sampler[Location]):
    """Random patch locations mixed across sources; deterministic and rank-sharded.

    Args:
        sources: Prepared sources.
        patch_size: Patch size in pixels.
        length: Patches per epoch over all ranks together.
        weights: Source probabilities (see :func:`source_weights`).
        seed: Base seed.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(
        self,
        sources: Sequence[SourceSampling],
        patch_size: int,
        length: int,
        weights: np.ndarray,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if length < world_size:
            raise ValueError(f"length ({length}) must be at least world_size ({world_size})")
        self.sources = list(sources)
        self.patch_size = patch_size
        self.length = length
        self.weights = weights
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_index = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (Lightning calls this); resets ``start_index``.

        Args:
            epoch: Epoch number.
        """
        if epoch != self.epoch:
            self.start_index = 0
        self.epoch = epoch

    def __len__(self) -> int:
        per_rank = self.length // self.world_size
        return max(per_rank - self.start_index, 0)

    def global_stream(self) -> list[Location]:
        """The epoch's whole stream, identical on every rank.

        Returns:
            ``length // world_size * world_size`` locations.
        """
        total = self.length // self.world_size * self.world_size
        rng = default_rng(mix_seed(self.seed, self.epoch))
        choice = rng.choice(len(self.sources), size=total, p=self.weights)
        per_source: list[Iterator[tuple[slice, slice]]] = []
        for i, s in enumerate(self.sources):
            n = int((choice == i).sum())
            sampler = RandomPatchSampler(
                s.reader.dataset,
                size=self.patch_size,
                length=max(n, 1),
                roi=s.roi,
                generator=mix_seed(self.seed, self.epoch, i),
            )
            per_source.append(iter(sampler) if n > 0 else iter(()))
        out: list[Location] = []
        for k, src in enumerate(choice):
            x, y = next(per_source[src])
            out.append((int(src), float(x.start), float(y.start), float(x.stop), float(y.stop), k))
        return out

    def __iter__(self) -> Iterator[Location]:
        stream = self.global_stream()[self.rank :: self.world_size]
        yield from stream[self.start_index :]


def gridded_locations(
    sources: Sequence[SourceSampling], patch_size: int, stride: int | None = None
) -> list[Location]:
    """All grid locations inside the ROI, source by source (for evaluation and inference).

    Args:
        sources: Prepared sources.
        patch_size: Patch size in pixels.
        stride: Stride in pixels (default: ``patch_size``).

    Returns:
        Locations in a fixed order.
    """
    out: list[Location] = []
    for i, s in enumerate(sources):
        sampler = GriddedPatchSampler(
            s.reader.dataset, size=patch_size, stride=stride or patch_size, roi=s.roi
        )
        for x, y in sampler:
            out.append((i, float(x.start), float(y.start), float(x.stop), float(y.stop), len(out)))
    return out
