"""The data floor: archive sources, sampling for pretraining, and labelled data.

* :mod:`geopera.data.sources`: local files, STAC documents and searches, recipes, remote reads,
  and :func:`~geopera.data.sources.discover.discover`, which sees all of them;
* :mod:`geopera.data.sampling`: readers, the patch sampler, bad files, statistics and
  :class:`~geopera.data.sampling.datamodule.PretrainDataModule`;
* :mod:`geopera.data.labelled`: labels, scenes, spatial splits, chips and named sets
  (:func:`~geopera.data.labelled.sets.load_labelled`);
* :mod:`geopera.data.roi`, :mod:`geopera.data.sensors` (one record per sensor) and
  :mod:`geopera.data.bands` (band names and presets), used by all three.

The names below are importable from ``geopera.data`` directly; the two that need torch are
imported on first use.
"""

from typing import Any

from geopera.data.roi import ROI, load_roi
from geopera.data.sources.discover import discover
from geopera.data.sources.model import Archive, Problem, RasterItem, Source

_LAZY = {
    "PretrainDataModule": "geopera.data.sampling.datamodule",
    "load_labelled": "geopera.data.labelled.sets",
}

__all__ = [
    "ROI",
    "Archive",
    "PretrainDataModule",
    "Problem",
    "RasterItem",
    "Source",
    "discover",
    "load_labelled",
    "load_roi",
]


def __getattr__(name: str) -> Any:
    """Import :class:`PretrainDataModule` and :func:`load_labelled` on first use (torch)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geopera.data' has no attribute {name!r}")
