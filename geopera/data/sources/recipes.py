"""Archive recipes: one YAML file per archive source (see ``datasets/README.md``).

A recipe names where an archive lives and what to take from it::

    name: sentinel2-l2a
    description: Sentinel-2 Level-2A surface reflectance (Element 84 Earth Search)
    licence: Copernicus Sentinel data terms (free, full and open)
    resolution: 10 m (B02, B03, B04, B08)
    search:                        # a STAC API search (the ROI is its intersects geometry)
      api: https://earth-search.aws.element84.com/v1
      collections: [sentinel-2-l2a]
      datetime: 2023-06-01/2023-08-31
      query: ["eo:cloud_cover<20"]
      max_items: 50
    assets: [blue, green, red, nir]   # bands to keep: asset keys, band names or common names
    sign: null                       # module:function that signs asset URLs

Instead of ``search``: ``catalog`` (a static catalog, collection or ItemCollection, path or URL)
or ``paths`` (local folders or files, relative to the recipe). Exactly one of the three.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from geopera.core.errors import ArchiveError
from geopera.data.sources.stac_search import StacSearch, StacSpec

_KEYS = {
    "name", "description", "licence", "resolution", "paths", "catalog", "search", "assets",
    "sign",
}  # fmt: skip
_SEARCH_KEYS = {"api", "collections", "datetime", "query", "max_items", "limit"}


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe.

    Attributes:
        path: The recipe file.
        name: Short name.
        description: One line: what the archive is.
        licence: Licence or terms of the data.
        resolution: Native resolution(s), as text.
        paths: Local folders/files (absolute), or empty.
        stac: The STAC document or search to read, or None.
    """

    path: Path
    name: str
    description: str
    licence: str
    resolution: str
    paths: tuple[str, ...]
    stac: StacSpec | None


def is_recipe(path: str) -> bool:
    """Whether an ``--archive`` argument is a recipe file (``.yaml`` / ``.yml``)."""
    return path.lower().endswith((".yaml", ".yml"))


def _strings(value: Any, key: str, where: Path) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ArchiveError(f"recipe {where}: {key!r} must be a string or a list of strings")


def _known_keys(mapping: dict[str, Any], valid: set[str], what: str, where: Path) -> None:
    unknown = {str(key) for key in mapping} - valid  # YAML keys may be null, numbers...
    if unknown:
        raise ArchiveError(
            f"recipe {where}: unknown {what}(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(sorted(valid))}"
        )


def _count(search: dict[str, Any], key: str, where: Path) -> int | None:
    """A positive integer of a recipe's search section, or None when it is not given."""
    if key not in search:
        return None
    value = search[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchiveError(
            f"recipe {where}: search {key} must be a positive integer, got {value!r}"
        )
    return value


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe.

    Args:
        path: The YAML file.

    Returns:
        The recipe.

    Raises:
        FileNotFoundError: If the file does not exist.
        ArchiveError: If a key is unknown, a required key is missing, or values are malformed.
    """
    where = Path(path)
    if not where.is_file():
        raise FileNotFoundError(
            f"recipe {where} does not exist; see datasets/ for the shipped ones"
        )
    try:
        doc = yaml.safe_load(where.read_text())
    except yaml.YAMLError as err:
        raise ArchiveError(f"recipe {where} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ArchiveError(f"recipe {where} must be a mapping (name:, description:, search:...)")
    _known_keys(doc, _KEYS, "key", where)
    kinds = [k for k in ("paths", "catalog", "search") if doc.get(k)]
    if len(kinds) != 1:
        raise ArchiveError(
            f"recipe {where} must have exactly one of paths:, catalog: or search: "
            f"(it has {', '.join(kinds) or 'none'})"
        )
    missing = [k for k in ("name", "description", "licence") if not doc.get(k)]
    if missing:
        raise ArchiveError(f"recipe {where} lacks {', '.join(missing)} (one line each)")
    assets = _strings(doc["assets"], "assets", where) if doc.get("assets") else None
    sign = doc.get("sign") or None
    stac: StacSpec | None = None
    paths: tuple[str, ...] = ()
    if kinds == ["paths"]:
        named = _strings(doc["paths"], "paths", where)
        paths = tuple(str((where.parent / p).resolve()) for p in named)
    elif kinds == ["catalog"]:
        href = str(doc["catalog"])
        if "://" not in href:
            href = str((where.parent / href).resolve())
        stac = StacSpec(href=href, assets=assets, sign=sign)
    else:
        search = doc["search"]
        if not isinstance(search, dict) or not search.get("api"):
            raise ArchiveError(f"recipe {where}: search: needs at least api: (the STAC API URL)")
        _known_keys(search, _SEARCH_KEYS, "search key", where)
        max_items = _count(search, "max_items", where)
        limit = _count(search, "limit", where) or 100
        stac = StacSpec(
            search=StacSearch(
                api=str(search["api"]).rstrip("/").removesuffix("/search"),
                collections=_strings(search.get("collections", []), "collections", where),
                datetime=str(search["datetime"]) if search.get("datetime") else None,
                query=_strings(search.get("query", []), "query", where),
                max_items=max_items,
                limit=limit,
            ),
            assets=assets,
            sign=sign,
        )
    return Recipe(
        path=where,
        name=str(doc["name"]),
        description=str(doc["description"]),
        licence=str(doc["licence"]),
        resolution=str(doc.get("resolution", "")),
        paths=paths,
        stac=stac,
    )
