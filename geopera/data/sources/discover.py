"""``discover``: the one module that sees every kind of source (files, STAC, recipes)."""

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from geopera.core.errors import ArchiveError

if TYPE_CHECKING:
    from geopera.data.roi import ROI

from geopera.data.sources.files import (
    dedup_items,
    find_rasters,
    group_band_files,
    item_from_file,
    name_sources,
    read_meta,
)
from geopera.data.sources.model import Archive, FileMeta, Problem, RasterItem
from geopera.data.sources.recipes import is_recipe, load_recipe
from geopera.data.sources.remote import configure_remote, gdal_path
from geopera.data.sources.stac_items import load_stac
from geopera.data.sources.stac_search import StacSpec, is_stac, parse_search_url


def _expand(
    paths: Sequence[str], roi: "ROI | None"
) -> tuple[list[str], list[RasterItem], list[Problem]]:
    """Split archive arguments into raster paths and STAC items (recipes, catalogs, searches)."""
    rasters: list[str] = []
    items: list[RasterItem] = []
    problems: list[Problem] = []
    for p in paths:
        spec = None
        if is_recipe(p):
            recipe = load_recipe(p)
            rasters.extend(recipe.paths)
            spec = recipe.stac
        elif p.lower().startswith(("stac+http://", "stac+https://")):
            spec = parse_search_url(p)
        elif is_stac(p):
            spec = StacSpec(href=p)
        else:
            rasters.append(gdal_path(p) if "://" in p else p)
        if spec is not None:
            found, bad = load_stac(spec, roi)
            items.extend(found)
            problems.extend(bad)
    return rasters, items, problems


def discover(paths: Iterable[str | os.PathLike[str]], roi: "ROI | None" = None) -> Archive:
    """Discover the sources of a raster archive.

    Args:
        paths: Folders, files, GDAL virtual paths or URLs of rasters; STAC catalogs,
            collections, items or ItemCollections (``.json``/``.geojson``, path or URL); STAC
            API searches (``stac+https://...``); recipe files (``.yaml``).
        roi: Optional ROI: a STAC search's ``intersects``; static catalogs' items outside it
            are left out.

    Returns:
        The archive's sources and problems.

    Raises:
        FileNotFoundError: If a local path does not exist.
        ArchiveError: If no path was given, or a STAC document cannot be used.
    """
    names = [str(p) for p in paths]
    if not names:
        raise ArchiveError("no archive path given; name one or more folders or raster files")
    rasters, stac_items, problems = _expand(names, roi)
    files, found = find_rasters(rasters) if rasters else ([], [])
    problems.extend(found)
    configure_remote(files + [a for it in stac_items for a in it.assets])
    metas: list[FileMeta] = []
    for f in files:
        meta = read_meta(f)
        if isinstance(meta, Problem):
            problems.append(meta)
        else:
            metas.append(meta)
    band_items, stacked = group_band_files(metas)
    items = band_items + [item_from_file(m) for m in stacked]
    items, dup_problems = dedup_items(items)
    problems.extend(dup_problems)
    items.extend(stac_items)
    by_sig: dict[tuple[Any, ...], list[RasterItem]] = defaultdict(list)
    # a stable order: files by path, STAC items by id (their VRT's path hashes the asset URLs,
    # which change with the host or a signature)
    for it in sorted(items, key=lambda i: i.scene if i.assets else i.paths[0]):
        by_sig[it.signature].append(it)
    sources = sorted(name_sources(list(by_sig.values())), key=lambda s: s.name)
    return Archive(sources=sources, problems=sorted(problems, key=lambda p: p.path))
