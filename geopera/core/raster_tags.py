"""The GDAL tags geopera writes on its class rasters, and reads back (STAC items, ``view``).

A class raster of ``predict`` carries ``classes`` (the class values, JSON) and ``class_names``
(one name per value, JSON), so that any reader names its classes without the model.
"""

import json
from typing import Any


def class_tags(values: list[Any], names: list[str]) -> dict[str, str]:
    """The tags of a class raster."""
    return {"classes": json.dumps(values), "class_names": json.dumps(names)}


def read_class_tags(tags: dict[str, str]) -> list[tuple[Any, str]] | None:
    """(value, name) of each class a raster's tags list; None for a raster without classes."""
    if "classes" not in tags:
        return None
    values = json.loads(tags["classes"])
    names = json.loads(tags.get("class_names", "null")) or [str(v) for v in values]
    return list(zip(values, names, strict=True))
