"""STAC Items for an ``embed`` folder's rasters and tables, with the geo-embeddings draft fields.

The ``emb:`` fields follow the draft geo-embeddings STAC extension: the model, its card,
dimensions, level, data type and quantisation. The draft has no published schema yet, so the
fields are written as plain properties and the items declare only the extensions pystac can
validate (``proj``, ``raster``).
"""

from pathlib import Path
from typing import Any

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
        # int8: a linear scale and offset per band (GDAL band metadata); float16: none
        "emb:quantization": "int8-linear" if manifest.dtype == "int8" else "none",
        "emb:token_size": manifest.token_size,
        "emb:chip_size": manifest.chip_size,
    }
    files: list[Path] = []
    per_file: dict[Path, dict[str, Any]] = {}
    for entry in manifest.rasters:
        dims = _dimensions(folder, entry.patches)
        for level, name in (("patch", entry.patches), ("chip", entry.chips)):
            if name is not None:
                files.append(folder / name)
                fields: dict[str, Any] = {"emb:level": level, "emb:source": entry.source}
                per_file[folder / name] = fields | ({"emb:dimensions": dims} if dims else {})
    links = card_links(manifest.weights)
    return write_items(files, common, "geopera embed outputs", links, per_file)
