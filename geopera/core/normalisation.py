"""The statistics every stage scales and standardises raw bands with.

:class:`BandStats` is the statistic of one set of pixels (a source's sampled patches, the training
chips of fine-tuning and evaluation, a raster to embed), computed in one place
(:meth:`BandStats.of_bands`); :class:`Normalisation` mixes the sources' statistics for pretraining.
The scaling itself runs on the device (:func:`geopera.transforms.normalise.scale_unit`).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BandStats:
    """Per-band statistics of a set of pixels: what every stage scales and standardises with.

    Raw values are scaled to [0, 1] with ``p2``/``p98`` (raw units) and clamped; ``mean`` and
    ``std`` are the moments of those scaled, clamped values. Pretraining (per source),
    fine-tuning and evaluation (training chips) and embedding (the raster) all compute them with
    :meth:`of_bands`.

    Attributes:
        p2: (C,) 2nd percentiles, raw units.
        p98: (C,) 98th percentiles, raw units.
        mean: (C,) mean of the scaled values.
        std: (C,) std of the scaled values (at least 1e-3).
    """

    p2: tuple[float, ...]
    p98: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of_bands(cls, bands: Sequence[np.ndarray]) -> "BandStats":
        """The statistics of each band's valid values.

        Args:
            bands: C arrays of valid raw values (any shape, any length; an empty band gets 0s).

        Returns:
            The statistics, one entry per band.
        """
        p2, p98, mean, std = [], [], [], []
        for values in bands:
            flat = np.asarray(values, dtype=np.float64).ravel()
            if flat.size == 0:
                flat = np.zeros(1)
            lo, hi = np.percentile(flat, [2, 98])
            scaled = np.clip((flat - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
            p2.append(float(lo))
            p98.append(float(hi))
            mean.append(float(scaled.mean()))
            std.append(float(max(scaled.std(), 1e-3)))
        return cls(tuple(p2), tuple(p98), tuple(mean), tuple(std))

    @classmethod
    def of_pixels(cls, pixels: np.ndarray) -> "BandStats":
        """The statistics of a (C, N) array of valid pixels.

        Args:
            pixels: (C, N) raw values.

        Returns:
            The statistics.
        """
        return cls.of_bands(list(pixels))

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> "BandStats":
        """Read ``{"p2", "p98", "mean", "std"}`` (as stored in checkpoints and caches).

        Args:
            data: The mapping.

        Returns:
            The statistics.

        Raises:
            ValueError: If a field is missing or the fields differ in length.
        """
        missing = [k for k in ("p2", "p98", "mean", "std") if k not in data]
        if missing:
            raise ValueError(f"band statistics lack {', '.join(missing)}; got {sorted(data)}")
        fields = [tuple(float(v) for v in data[k]) for k in ("p2", "p98", "mean", "std")]
        if len({len(f) for f in fields}) != 1:
            raise ValueError(f"band statistics of different lengths: {[len(f) for f in fields]}")
        return cls(*fields)

    def to_dict(self) -> dict[str, list[float]]:
        """``{"p2", "p98", "mean", "std"}`` as lists (JSON and checkpoint hyperparameters)."""
        return {"p2": [*self.p2], "p98": [*self.p98], "mean": [*self.mean], "std": [*self.std]}


@dataclass(frozen=True)
class Normalisation:
    """What pretraining applies on the device: per-source scaling, then one standardisation.

    Attributes:
        sources: Source names, in the data module's order.
        p2: (S, C) per-source 2nd percentiles, raw units.
        p98: (S, C) per-source 98th percentiles.
        mean: (C,) mean of the scaled data, averaged over sources by sampling weight.
        std: (C,) std of the scaled data, averaged the same way.
        raw_mean: (C,) ``mean`` in raw units (``p2 + mean * (p98 - p2)``, weighted; the clamp
            ignored), for users who standardise raw values.
        raw_std: (C,) ``std`` in raw units.
    """

    sources: tuple[str, ...]
    p2: tuple[tuple[float, ...], ...]
    p98: tuple[tuple[float, ...], ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    raw_mean: tuple[float, ...]
    raw_std: tuple[float, ...]

    @classmethod
    def mix(
        cls, stats: Mapping[str, BandStats], weights: Sequence[float] | None = None
    ) -> "Normalisation":
        """Mix per-source statistics by sampling weight.

        Args:
            stats: Statistics by source name, in the data module's order.
            weights: Mixing weights of the sources (default: equal).

        Returns:
            The normalisation.
        """
        names = list(stats)
        w = np.asarray(weights if weights is not None else [1.0] * len(names), dtype=np.float64)
        w = (w / w.sum())[:, None]  # (S, 1)
        mean = (w * np.array([stats[n].mean for n in names])).sum(0)  # (S, C) -> (C,)
        std = np.maximum((w * np.array([stats[n].std for n in names])).sum(0), 1e-3)
        p2 = [stats[n].p2 for n in names]
        p98 = [stats[n].p98 for n in names]
        return cls.of_arrays(names, p2, p98, mean, std, w[:, 0])

    @classmethod
    def of_arrays(
        cls,
        sources: Sequence[str],
        p2: Sequence[Sequence[float]] | np.ndarray,
        p98: Sequence[Sequence[float]] | np.ndarray,
        mean: Sequence[float] | np.ndarray,
        std: Sequence[float] | np.ndarray,
        weights: Sequence[float] | np.ndarray,
    ) -> "Normalisation":
        """A normalisation from its arrays (e.g. a trained task's buffers), raw units derived.

        Args:
            sources: Source names.
            p2: (S, C) per-source 2nd percentiles.
            p98: (S, C) per-source 98th percentiles.
            mean: (C,) mean of the scaled data.
            std: (C,) std of the scaled data.
            weights: (S,) sampling weights of the sources.

        Returns:
            The normalisation.
        """
        w = np.asarray(weights, dtype=np.float64)
        w = (w / w.sum())[:, None]  # (S, 1)
        lo, hi = np.asarray(p2, dtype=np.float64), np.asarray(p98, dtype=np.float64)
        span = np.maximum(hi - lo, 1e-6)  # (S, C)
        m, s = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        return cls(
            sources=tuple(sources),
            p2=tuple(tuple(float(v) for v in row) for row in lo),
            p98=tuple(tuple(float(v) for v in row) for row in hi),
            mean=tuple(float(v) for v in m),
            std=tuple(float(v) for v in s),
            raw_mean=tuple(float(v) for v in (w * (lo + m * span)).sum(0)),
            raw_std=tuple(float(v) for v in (w * (s * span)).sum(0)),
        )
