"""The data floor: archive sources, sampling for pretraining, and labelled data.

* :mod:`geopera.data.sources`: local files, STAC documents and searches, recipes, remote reads,
  and :func:`~geopera.data.sources.discover.discover`, which sees all of them;
* :mod:`geopera.data.sampling`: readers, the patch sampler, bad files, statistics and
  :class:`~geopera.data.sampling.datamodule.PretrainDataModule`;
* :mod:`geopera.data.labelled`: labels, scenes, spatial splits, chips and named sets
  (:func:`~geopera.data.labelled.sets.load_labelled`);
* :mod:`geopera.data.roi` and :mod:`geopera.data.bands` (band names, presets and
  :class:`~geopera.data.bands.SensorFamily`), used by all three.

The names below are importable from ``geopera.data`` directly; the two that need torch are
imported on first use. The module paths of the flat data floor of geopera 0.1
(``geopera.data.archive``, ``geopera.data.datamodule``...) still import, with a
``DeprecationWarning`` naming the new path (:mod:`geopera.data.moved`).
"""

from typing import Any

from geopera.data.bands import SensorFamily
from geopera.data.moved import install
from geopera.data.roi import ROI, load_roi
from geopera.data.sources.discover import discover
from geopera.data.sources.model import Archive, Problem, RasterItem, Source

_LAZY = {
    "PretrainDataModule": "geopera.data.sampling.datamodule",
    "load_labelled": "geopera.data.labelled.sets",
}

install()  # geopera 0.1's module paths (geopera.data.archive...) keep importing, with a warning

__all__ = [
    "ROI",
    "Archive",
    "PretrainDataModule",
    "Problem",
    "RasterItem",
    "SensorFamily",
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
