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
from geopera.data.sources.index import Progress, read_indexed
from geopera.data.sources.model import Archive, FileMeta, Problem, RasterItem
from geopera.data.sources.recipes import is_recipe, load_recipe
from geopera.data.sources.remote import configure_remote, gdal_path
from geopera.data.sources.stac_items import load_stac
from geopera.data.sources.stac_search import StacSpec, is_stac, parse_search_url


def _expand(
    paths: Sequence[str], roi: "ROI | None", reindex: bool
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
            found, bad = load_stac(spec, roi, reindex)
            items.extend(found)
            problems.extend(bad)
    return rasters, items, problems


def _read_headers(
    files: list[str], rasters: list[str], reindex: bool, progress: Progress | None
) -> list[FileMeta | Problem]:
    """Each file's metadata: through the index of the folder it was found in, else read."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    folders = [
        os.path.join(r, "") for r in rasters if not r.startswith("/vsi") and os.path.isdir(r)
    ]
    for f in files:
        home = next((d for d in folders if f.startswith(d)), None)
        by_folder[home or ""].append(f)
    found: dict[str, FileMeta | Problem] = {f: read_meta(f) for f in by_folder.pop("", [])}
    for folder, inside_it in by_folder.items():
        metas = read_indexed(folder, inside_it, reindex=reindex, progress=progress)
        found.update(zip(inside_it, metas, strict=True))
    return [found[f] for f in files]


def discover(
    paths: Iterable[str | os.PathLike[str]],
    roi: "ROI | None" = None,
    reindex: bool = False,
    progress: Progress | None = None,
) -> Archive:
    """Discover the sources of a raster archive.

    Args:
        paths: Folders, files, GDAL virtual paths or URLs of rasters; STAC catalogs,
            collections, items or ItemCollections (``.json``/``.geojson``, path or URL); STAC
            API searches (``stac+https://...``); recipe files (``.yaml``).
        roi: Optional ROI: a STAC search's ``intersects``; static catalogs' items outside it
            are left out.
        reindex: Read every file of an archive folder, and every STAC asset header, again
            instead of reusing the archive index (:mod:`geopera.data.sources.index`).
        progress: Called with ``(read, to_read)`` while file headers are read.

    Returns:
        The archive's sources and problems.

    Raises:
        FileNotFoundError: If a local path does not exist.
        ArchiveError: If no path was given, or a STAC document cannot be used.
    """
    names = [str(p) for p in paths]
    if not names:
        raise ArchiveError("no archive path given; name one or more folders or raster files")
    rasters, stac_items, problems = _expand(names, roi, reindex)
    files, found = find_rasters(rasters) if rasters else ([], [])
    problems.extend(found)
    configure_remote(files + [a for it in stac_items for a in it.assets])
    metas: list[FileMeta] = []
    for meta in _read_headers(files, rasters, reindex, progress):
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
