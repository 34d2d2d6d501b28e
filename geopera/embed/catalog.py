"""STAC Items for an ``embed`` folder's rasters and tables, with the geo-embeddings draft fields.

The ``emb:`` fields follow the draft geo-embeddings STAC extension: the model, its card,
dimensions, level, data type and quantisation. The draft has no published schema yet, so the
fields are written as plain properties and the items declare only the extensions pystac can
validate (``proj``, ``raster``).
"""

from pathlib import Path

import pystac
import rasterio

from geopera.core.contracts import EmbeddingSet
from geopera.core.stac import write_items


def card_links(weights: str) -> list[pystac.Link]:
    """A link to the backbone card, where the weights are a folder or file with one."""
    folder = Path(weights)
    card = folder / "backbone.json" if folder.is_dir() else folder.with_suffix(".json")
    if not card.is_file():
        return []
    href = str(card.resolve())
    return [pystac.Link("via", href, pystac.MediaType.JSON, title="backbone card")]


def _dimensions(folder: Path, entry_patches: str | None) -> int | None:
    if entry_patches is None:
        return None
    with rasterio.open(folder / entry_patches) as ds:
        return int(ds.count)


def describe_embeddings(manifest: EmbeddingSet, folder: Path) -> list[Path]:
    """Write an item beside each embedding raster and chip table of ``folder``."""
    common = {
        "emb:model": manifest.model,
        "emb:weights": manifest.weights,
        "emb:dtype": manifest.dtype,
        "emb:quantization": "none",
        "emb:token_size": manifest.token_size,
        "emb:chip_size": manifest.chip_size,
    }
    files, per_file = [], {}
    for entry in manifest.rasters:
        dims = _dimensions(folder, entry.patches)
        if entry.patches is not None:
            path = folder / entry.patches
            files.append(path)
            per_file[path] = {
                "emb:level": "patch",
                "emb:dimensions": dims,
                "emb:source": entry.source,
            }
        if entry.chips is not None:
            path = folder / entry.chips
            files.append(path)
            per_file[path] = {
                "emb:level": "chip",
                "emb:dimensions": dims,
                "emb:source": entry.source,
            }
    links = card_links(manifest.weights)
    return write_items(files, common, "geopera embed outputs", links, per_file)
