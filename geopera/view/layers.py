"""What ``geopera view`` shows: the layers of the paths it was given.

Each path is recognised by the first recogniser of :data:`geopera.view.discover.RECOGNISERS`
that takes it, so that a new kind of output is one function added there:

* an ``embed`` folder (``embeddings.json``): the PCA of each patch-embedding COG as RGB, the chip
  footprints, and click-to-search (:mod:`geopera.view.search`);
* a STAC catalog (``catalog.json``): the files its items' assets name, inside its folder;
* another folder: the rasters and vector files in it;
* a raster: by the tags geopera writes (``task``, ``geopera_kind``), else RGB by band identity;
* a vector file (GeoParquet, GeoJSON, GeoPackage).

Layers are known by ids the server gives (``l0``, ``l1``...): no request names a file.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.warp import transform_bounds

from geopera.core.errors import GeoperaError, note
from geopera.core.identity import rgb_indices
from geopera.core.raster_tags import read_class_tags
from geopera.models.bandplan import raster_bands
from geopera.view.styles import ClassStyle, RampStyle, RGBStyle, Style

RASTERS = (".tif", ".tiff", ".vrt", ".jp2", ".img")
VECTORS = (".parquet", ".geojson", ".gpkg")
#: Longest side of the decimated read that sets a layer's stretch.
PREVIEW_PX = 512


class ViewError(GeoperaError):
    """A path cannot be shown."""


@dataclass
class Layer:
    """One layer of the map.

    Attributes:
        name: What the layer list shows.
        path: The raster or vector file.
        bounds: (west, south, east, north) in degrees.
        style: How a raster's tiles are coloured; None for a vector layer.
        id: Given by the server.
    """

    name: str
    path: Path
    bounds: tuple[float, float, float, float]
    style: Style | None = None
    id: str = ""

    def describe(self) -> dict[str, Any]:
        """The layer's entry of ``layers.json``."""
        raster = self.style is not None
        return {
            "id": self.id,
            "name": self.name,
            "type": "raster" if raster else "vector",
            "bounds": list(self.bounds),
            "legend": self.style.legend() if self.style else {"kind": "outline"},
            "url": f"/tiles/{self.id}/{{z}}/{{x}}/{{y}}.png" if raster else f"/vector/{self.id}",
        }


@dataclass
class Found:
    """What the paths hold: their layers and the embed folders that can be searched."""

    layers: list[Layer] = field(default_factory=list)
    embeddings: list[Path] = field(default_factory=list)


def lonlat_bounds(ds: Any) -> tuple[float, float, float, float]:
    """A dataset's bounds in degrees."""
    if ds.crs is None:
        raise ViewError(f"{ds.name} has no CRS: geopera view shows georeferenced rasters")
    w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    return (float(w), float(s), float(e), float(n))


def preview(ds: Any, bands: list[int]) -> np.ndarray:
    """(N, h, w) float64 decimated read of ``bands``, NaN where invalid."""
    scale = max(ds.width, ds.height) / PREVIEW_PX
    shape = (
        max(1, math.ceil(ds.height / max(scale, 1))),
        max(1, math.ceil(ds.width / max(scale, 1))),
    )
    data = ds.read(bands, out_shape=(len(bands), *shape), masked=True).astype(np.float64)
    return np.asarray(data.filled(np.nan))


def _limits(values: np.ndarray) -> tuple[float, float]:
    """The 2nd and 98th percentiles of the finite values ((0, 1) without any)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    low, high = np.percentile(finite, [2, 98])
    return float(low), float(high if high > low else low + 1)


def _ramp(ds: Any, label: str, cmap: str, reduce_max: bool = False) -> Style:
    bands = list(range(1, ds.count + 1)) if reduce_max else [1]
    data = preview(ds, bands)
    low, high = _limits(data.max(0) if reduce_max else data[0])
    return RampStyle(len(bands), low, high, cmap, label, reduce_max)


def _rgb(ds: Any) -> Style:
    bands = raster_bands(ds.name)
    found = rgb_indices(bands.identities) if bands.identities else None
    chosen = [i + 1 for i in found] if found else ([1, 2, 3] if ds.count >= 3 else [1, 1, 1])
    data = preview(ds, chosen)
    limits = [_limits(band) for band in data]
    how = "by band identity" if found else "the first bands" if ds.count >= 3 else "band 1"
    label = f"RGB ({how}: {', '.join(bands.names[i - 1] for i in chosen)}), 2-98 % stretch"
    low = tuple(lo for lo, _ in limits)
    high = tuple(hi for _, hi in limits)
    return RGBStyle((chosen[0], chosen[1], chosen[2]), low, high, label)  # type: ignore[arg-type]


def raster_style(ds: Any) -> Style:
    """A raster's style, from the tags geopera writes on its outputs."""
    tags = ds.tags()
    kind = tags.get("geopera_kind", "")
    classes = read_class_tags(tags)
    if classes is not None:
        return ClassStyle(tuple(v for v, _ in classes), tuple(n for _, n in classes))
    if kind == "probabilities":
        return _ramp(ds, "class probability (the largest)", "magma", reduce_max=True)
    if kind == "similarity":
        return _ramp(ds, "cosine similarity to the query", "inferno")
    if kind == "values":
        return _ramp(ds, tags.get("target", "predicted value"), "viridis")
    if kind == "embedding-pca":
        return RGBStyle((1, 2, 3), (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "PCA of embeddings")
    return _rgb(ds)


def raster_layer(path: Path) -> list[Layer]:
    """A raster as one layer (a note when low zooms must read every pixel)."""
    with rasterio.open(path) as ds:
        if max(ds.width, ds.height) > 4096 and not ds.overviews(1):
            note(f"{path} has no overviews: zoomed out, each tile reads every pixel (slow); "
                 f"add them with `gdaladdo -r average {path}`")  # fmt: skip
        return [Layer(path.name, path, lonlat_bounds(ds), raster_style(ds))]


def vector_layer(path: Path) -> list[Layer]:
    """A vector file as one layer (its features in degrees, served as GeoJSON)."""
    import geopandas as gpd

    frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    if frame.crs is None:
        raise ViewError(f"{path} has no CRS: geopera view shows georeferenced features")
    w, s, e, n = frame.to_crs("EPSG:4326").total_bounds
    return [Layer(path.name, path, (float(w), float(s), float(e), float(n)))]
