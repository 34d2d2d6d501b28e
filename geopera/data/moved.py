"""The module paths of geopera 0.1's flat data floor, kept importable with a warning.

``geopera.data`` was split into ``sources``, ``sampling`` and ``labelled`` (and the archive
commands moved to :mod:`geopera.archive`). ``from geopera.data.archive import discover`` and the
like keep working: the old module is a stand-in that finds each name in its new home and warns
once (``DeprecationWarning``) with the new path.
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

#: Old module (under ``geopera.data``) -> the modules that now hold its names.
MOVED: dict[str, tuple[str, ...]] = {
    "archive": ("data.sources.model", "data.sources.files", "data.sources.discover"),
    "stac": ("data.sources.stac_search", "data.sources.stac_items", "data.sources.stac_assets"),
    "recipes": ("data.sources.recipes",),
    "remote": ("data.sources.remote",),
    "datasets": ("data.sampling.readers",),
    "badfiles": ("data.sampling.badfiles",),
    "stats": ("data.sampling.stats",),
    "datamodule": ("data.sampling.datamodule",),
    "labels": ("data.labelled.labels",),
    "windows": ("data.labelled.windows",),
    "labelled_sets": ("data.labelled.sets",),
    "fetch": ("archive.fetch",),
    "chips": ("archive.chips",),
    "sample_archive": ("archive.sample_archive",),
}
#: Old modules whose names are now packages: their names are found through the package.
OLD_PACKAGES: dict[str, tuple[str, ...]] = {
    "sampling": ("data.sampling.sampler", "data.sampling.patches"),
    "labelled": ("data.labelled.scenes", "data.labelled.chips"),
}


def find_moved(old: str, homes: Sequence[str], name: str) -> Any:
    """``name`` of the old module ``geopera.data.<old>``, from its new home (with a warning).

    Raises:
        AttributeError: If no new home has the name.
    """
    if name.startswith("__"):  # module machinery (__file__, __path__...): not a moved name
        raise AttributeError(f"module 'geopera.data.{old}' has no attribute {name!r}")
    for home in homes:
        module = importlib.import_module(f"geopera.{home}")
        if hasattr(module, name):
            warnings.warn(
                f"geopera.data.{old}.{name} moved to geopera.{home}.{name}",
                DeprecationWarning,
                stacklevel=3,
            )
            return getattr(module, name)
    raise AttributeError(f"module 'geopera.data.{old}' has no attribute {name!r}")


class _StandIn(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = spec.name.rsplit(".", 1)[1]
        module = ModuleType(spec.name, f"Moved: see geopera.{MOVED[old][0]}.")
        module.__getattr__ = lambda name: find_moved(old, MOVED[old], name)  # type: ignore[method-assign]
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the stand-in only forwards names."""


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        prefix, _, old = fullname.rpartition(".")
        if prefix != "geopera.data" or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StandIn())


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
