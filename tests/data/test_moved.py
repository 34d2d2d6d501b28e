"""geopera 0.1's data module paths keep importing, with a warning that names the new path."""

import importlib

import pytest

from geopera.data.moved import MOVED, OLD_PACKAGES


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("geopera.data.datamodule", "PretrainDataModule", "geopera.data.sampling.datamodule"),
        ("geopera.data.labelled_sets", "load_labelled", "geopera.data.labelled.sets"),
        ("geopera.data.archive", "discover", "geopera.data.sources.discover"),
        ("geopera.data.archive", "RasterItem", "geopera.data.sources.model"),
        ("geopera.data.stac", "load_stac", "geopera.data.sources.stac_items"),
        ("geopera.data.sampling", "PatchDataset", "geopera.data.sampling.patches"),
        ("geopera.data.labelled", "make_chips", "geopera.data.labelled.chips"),
        ("geopera.data.sample_archive", "build_sample_archive", "geopera.archive.sample_archive"),
    ],
)
def test_old_paths_give_the_same_objects_with_a_warning(old: str, name: str, new: str) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)


def test_every_old_home_exists_and_unknown_names_fail() -> None:
    for homes in (*MOVED.values(), *OLD_PACKAGES.values()):
        for home in homes:
            importlib.import_module(f"geopera.{home}")
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        importlib.import_module("geopera.data.archive").nothing  # noqa: B018
