"""Sampling for pretraining: readers, the patch sampler, bad files, statistics, the data module."""

from typing import Any


def __getattr__(name: str) -> Any:
    """Names of geopera 0.1's ``geopera.data.sampling`` module, now in this package's modules."""
    from geopera.data.moved import OLD_PACKAGES, find_moved

    return find_moved("sampling", OLD_PACKAGES["sampling"], name)
