"""Write sampled patches as georeferenced GeoTIFF chips with a GeoJSON index.

Chips keep their source's native CRS, grid and dtype. The output is assembled in a temporary
sibling folder and renamed into place when complete, so an interrupted run leaves no folder that
looks finished.
"""

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.warp import transform_geom

from geopera.core.names import inside, safe_name
from geopera.core.outputs import require_new_folder, staged_folder
from geopera.data.sampling.patches import PatchDataset
from geopera.data.sampling.sampler import Location
from geopera.data.sources.model import crs_label


def write_chips(
    dataset: PatchDataset,
    locations: Iterable[Location],
    out: Path,
    count: int,
    advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Read ``count`` patches and write them as chips plus ``chips.geojson``.

    Args:
        dataset: Reads patches with quality control.
        locations: Sampler locations (at least ``count``).
        out: Output folder; must not exist or be empty.
        count: Number of chips.
        advance: Called with 1 after each chip (progress bars).

    Returns:
        The GeoJSON index that was written.
    """
    out = Path(out)
    require_new_folder(out)
    features: list[dict[str, Any]] = []
    with staged_folder(out) as work:
        for n, loc in enumerate(locations):
            if n == count:
                break
            sample = dataset[loc]
            src = dataset.sources[int(sample["source"])]
            xmin, ymin, xmax, ymax = (float(v) for v in sample["bounds"])
            image = sample["image"].numpy()  # (C, H, W)
            rx, ry = src.source.res
            # the source's name may come from a recipe or a collection id: a safe component
            name = f"chip_{n:06d}_{safe_name(src.source.name)}.tif"
            profile = {
                "driver": "GTiff",
                "width": image.shape[2],
                "height": image.shape[1],
                "count": image.shape[0],
                "dtype": src.source.dtype,
                "crs": src.source.crs,
                "transform": from_origin(xmin, ymax, rx, ry),
                "nodata": src.source.nodata,
                "compress": "deflate",
            }
            with rasterio.open(inside(work, work / name), "w", **profile) as dst:
                dst.write(image.astype(np.dtype(src.source.dtype), copy=False))
                dst.descriptions = tuple(src.reader.bands)
            box = shapely.box(xmin, ymin, xmax, ymax)
            geom = transform_geom(src.source.crs, "EPSG:4326", shapely.geometry.mapping(box))
            features.append(
                {
                    "type": "Feature",
                    "geometry": geom,
                    "properties": {
                        "path": name,
                        "source": src.source.name,
                        "crs": crs_label(src.source.crs),
                        "bounds": [xmin, ymin, xmax, ymax],
                        "bands": src.reader.bands,
                        "rejected_before": int(sample["rejected"]),
                    },
                }
            )
            if advance is not None:
                advance(1)
        index = {"type": "FeatureCollection", "features": features}
        (work / "chips.geojson").write_text(json.dumps(index, indent=1))
    return index
