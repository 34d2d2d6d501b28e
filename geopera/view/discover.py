"""The recognisers of :mod:`geopera.view.layers`: which layers a path given to ``view`` holds."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from geopera.core.contracts import EmbeddingSet
from geopera.view.layers import RASTERS, VECTORS, Found, ViewError, raster_layer, vector_layer
from geopera.view.pca import pca_rgb


def embed_folder(path: Path, found: Found, scratch: Path) -> bool:
    """An ``embed`` folder: the PCA of its patch COGs, its chip footprints, and search."""
    if not (path.is_dir() and (path / EmbeddingSet.FILE).is_file()):
        return False
    manifest = EmbeddingSet.read(path / EmbeddingSet.FILE)
    for n, entry in enumerate(manifest.rasters):
        if entry.patches is not None:
            pca = pca_rgb(path / entry.patches, scratch / f"pca_{len(found.layers)}_{n}.tif")
            (layer,) = raster_layer(pca)
            layer.name = f"{entry.name}: embeddings (PCA)"
            found.layers.append(layer)
        if entry.chips is not None:
            (chips,) = vector_layer(path / entry.chips)
            chips.name = f"{entry.name}: chips"
            found.layers.append(chips)
    found.embeddings.append(path)
    return True


def stac_catalog(path: Path, found: Found, scratch: Path) -> bool:
    """A STAC catalog: the file assets of its items, where both lie inside the catalog's folder.

    The catalog and its items are read as data: only ``item`` links to files beside it are
    followed (nothing is fetched), and an asset outside the folder is not shown.
    """
    file = path / "catalog.json" if path.is_dir() else path
    if file.name != "catalog.json" or not file.is_file():
        return False
    root = file.parent.resolve()
    catalog = _json(file)
    links = catalog.get("links", []) if isinstance(catalog, dict) else []
    for href in _local_hrefs(links, root, root, "item"):
        item = _json(href)
        assets = item.get("assets", {}) if isinstance(item, dict) else {}
        for asset in assets.values() if isinstance(assets, dict) else []:
            for target in _local_hrefs([asset], href.parent, root, None):
                one_file(target, found, scratch)
    return True


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ViewError(f"{path} is not readable JSON ({err})") from err


def _local_hrefs(links: Any, base: Path, root: Path, rel: str | None) -> list[Path]:
    """The files that links (of ``rel``, or any) name from ``base``, when inside ``root``."""
    found = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or (rel is not None and link.get("rel") != rel):
            continue
        href = str(link.get("href", ""))
        if "://" in href:  # a remote asset: geopera view shows local files only
            continue
        target = (base / href).resolve()
        if target.is_file() and root in target.parents:
            found.append(target)
    return found


def folder(path: Path, found: Found, scratch: Path) -> bool:
    """Any other folder: the rasters and vector files directly in it."""
    if not path.is_dir():
        return False
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in (*RASTERS, *VECTORS))
    for file in files:
        one_file(file, found, scratch)
    return True


def one_file(path: Path, found: Found, scratch: Path) -> bool:
    """A raster or a vector file."""
    if path.suffix.lower() in RASTERS:
        found.layers += raster_layer(path)
    elif path.suffix.lower() in VECTORS:
        found.layers += vector_layer(path)
    else:
        raise ViewError(f"{path} is neither a raster ({', '.join(RASTERS)}) nor a vector file")
    return True


#: First match wins: a catalog folder is shown as its catalog, an embed folder as embeddings.
RECOGNISERS: tuple[Callable[[Path, Found, Path], bool], ...] = (
    embed_folder,
    stac_catalog,
    folder,
    one_file,
)


def discover(paths: list[Path], scratch: Path) -> Found:
    """Every layer of the paths, with ids ``l0``, ``l1``... in order.

    Raises:
        ViewError: If a path does not exist, or holds nothing geopera can show.
    """
    found = Found()
    for path in paths:
        if not path.exists():
            raise ViewError(f"{path} does not exist: give geopera outputs, rasters or folders")
        next(r for r in RECOGNISERS if r(path, found, scratch))
    if not found.layers:
        raise ViewError(
            f"nothing to show in {', '.join(map(str, paths))}: no raster or vector file"
        )
    for n, layer in enumerate(found.layers):
        layer.id = f"l{n}"
    return found
