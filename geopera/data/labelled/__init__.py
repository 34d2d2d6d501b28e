"""Labelled data for fine-tuning and evaluation: labels, scenes, splits, chips and named sets."""

from typing import Any


def __getattr__(name: str) -> Any:
    """Names of geopera 0.1's ``geopera.data.labelled`` module, now in this package's modules."""
    from geopera.data.moved import OLD_PACKAGES, find_moved

    return find_moved("labelled", OLD_PACKAGES["labelled"], name)
