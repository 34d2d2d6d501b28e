"""Read labels of any common form onto the pixel grid of an image.

* Label rasters: read directly when on the image's grid, otherwise reprojected (nearest) onto it;
  ungeoreferenced chips must have the image's shape. The raster's nodata value is unlabelled.
* Vector labels: polygons rasterised with the integer (or category) value of a class field;
  pixels outside every polygon are unlabelled. Without a class field the polygons are a binary
  mask (1 inside, 0 = background outside).
* Boxes: CSV tables (``image_path,xmin,ymin,xmax,ymax,label``, pixel or map coordinates),
  Pascal VOC XML, or polygons of a vector file (their envelopes).

Label arrays are ``int32`` with :data:`IGNORE` (-1) for unlabelled pixels.
"""

import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import rasterio.features
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from rasterio.vrt import WarpedVRT
from rasterio.warp import reproject

from geopera.core.errors import GeoperaError

#: Label value of unlabelled pixels.
IGNORE = -1
VECTOR_SUFFIXES = (".geojson", ".json", ".gpkg", ".shp", ".fgb", ".parquet")


class LabelError(GeoperaError):
    """Labels cannot be read or do not fit the images."""


@dataclass(frozen=True)
class Grid:
    """The pixel grid of an image.

    Attributes:
        width: Columns.
        height: Rows.
        crs: CRS, or None for ungeoreferenced chips.
        transform: Pixel-to-map affine transform.
    """

    width: int
    height: int
    crs: CRS | None
    transform: Affine

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> "Grid":
        """The grid of a raster file (chips without a georeference are on a pixel grid)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
        with ds:
            return cls(ds.width, ds.height, ds.crs, ds.transform)


def open_on_grid(path: str | os.PathLike[str], grid: Grid) -> Any:
    """Open a raster so that its pixels line up with ``grid``.

    Args:
        path: Raster file.
        grid: Target grid.

    Returns:
        The dataset itself when it is on the grid, else a bilinear ``WarpedVRT`` onto it (the
        caller closes it).

    Raises:
        LabelError: If the grids differ and one of them has no CRS.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a chip: its grid is pixels
        ds = rasterio.open(path)
    same = (ds.width, ds.height) == (grid.width, grid.height) and (
        grid.crs is None or (ds.crs == grid.crs and ds.transform.almost_equals(grid.transform))
    )
    if same:
        return ds
    if grid.crs is None or ds.crs is None:
        ds.close()
        raise LabelError(f"{path} is not on the grid of the first image and has no CRS to warp it")
    return WarpedVRT(
        ds,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.width,
        height=grid.height,
        resampling=Resampling.bilinear,
    )


def is_vector(path: str | os.PathLike[str]) -> bool:
    """Whether a label path is a vector file (by suffix)."""
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def read_label_raster(path: str | os.PathLike[str], grid: Grid) -> np.ndarray:
    """A label raster on an image's grid.

    Args:
        path: Single-band label raster.
        grid: The image's grid.

    Returns:
        (H, W) int32 labels, :data:`IGNORE` where the raster is nodata or does not cover.

    Raises:
        LabelError: If an ungeoreferenced label does not have the image's shape.
    """
    with rasterio.open(path) as ds:
        nodata = ds.nodata
        same_grid = (ds.width, ds.height) == (grid.width, grid.height) and (
            grid.crs is None
            or ds.crs is None
            or (ds.crs == grid.crs and ds.transform.almost_equals(grid.transform))
        )
        if same_grid:
            raw = ds.read(1)
            data = raw.astype(np.int32)
            if nodata is not None:
                data[raw == nodata] = IGNORE
            return data
        if grid.crs is None or ds.crs is None:
            raise LabelError(
                f"{path} is {ds.width}x{ds.height} px but its image is {grid.width}x{grid.height} "
                "and one of them has no georeference, so it cannot be reprojected; give a label "
                "raster of the image's size"
            )
        out = np.full((grid.height, grid.width), IGNORE, dtype=np.int32)
        reproject(
            source=ds.read(1).astype(np.int32),
            destination=out,
            src_transform=ds.transform,
            src_crs=ds.crs,
            src_nodata=nodata if nodata is not None else None,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=IGNORE,
            resampling=Resampling.nearest,
        )
        return out


def _class_values(values: pd.Series, field: str, path: str | os.PathLike[str]) -> np.ndarray:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if not np.allclose(numeric, numeric.round()):
            raise LabelError(f"class field {field!r} of {path} holds non-integer numbers")
        return numeric.round().astype(np.int32).to_numpy()
    raise LabelError(
        f"class field {field!r} of {path} is not numeric (e.g. {values.iloc[0]!r}); give a field "
        "with integer class codes"
    )


def _read_vector(path: str | os.PathLike[str]) -> Any:
    """A vector file as a GeoDataFrame; one line when it cannot be read."""
    import geopandas as gpd

    try:
        return gpd.read_file(path)
    except Exception as err:  # pyogrio raises DataSourceError and friends
        raise LabelError(f"{path} could not be read as vector data ({err})") from err


def read_label_vector(
    path: str | os.PathLike[str], grid: Grid, class_field: str | None
) -> np.ndarray:
    """Rasterise polygon labels onto an image's grid.

    Args:
        path: Vector file of polygons.
        grid: The image's grid (must be georeferenced).
        class_field: Integer attribute with the class of each polygon; None for a binary mask.

    Returns:
        (H, W) int32 labels (see the module docstring for unlabelled pixels).

    Raises:
        LabelError: If the image has no georeference, the file has no CRS, or the field is
            missing.
    """
    if grid.crs is None:
        raise LabelError(f"vector labels {path} need georeferenced images")
    frame = _read_vector(path)
    if frame.crs is None:
        raise LabelError(f"{path} has no CRS; save it with one (e.g. EPSG:4326)")
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].to_crs(grid.crs)
    if class_field is None:
        values = np.ones(len(frame), dtype=np.int32)
        fill = 0
    else:
        if class_field not in frame.columns:
            fields = ", ".join(c for c in frame.columns if c != "geometry")
            raise LabelError(f"{path} has no field {class_field!r}; its fields are: {fields}")
        values = _class_values(frame[class_field], class_field, path)
        fill = IGNORE
    shapes = list(zip(frame.geometry, values.tolist(), strict=True))
    if not shapes:
        return np.full((grid.height, grid.width), fill, dtype=np.int32)
    return rasterio.features.rasterize(
        shapes,
        out_shape=(grid.height, grid.width),
        transform=grid.transform,
        fill=fill,
        dtype="int32",
    )


@dataclass
class Boxes:
    """Boxes of one image in pixel coordinates.

    Attributes:
        xyxy: (N, 4) float32 ``xmin, ymin, xmax, ymax``.
        names: N class names.
    """

    xyxy: np.ndarray
    names: list[str]


def apply_affine(t: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply an affine transform to coordinate arrays (float64)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _map_to_pixel(xyxy: np.ndarray, grid: Grid) -> np.ndarray:
    inverse = ~grid.transform
    x0, y0 = apply_affine(inverse, xyxy[:, 0], xyxy[:, 1])
    x1, y1 = apply_affine(inverse, xyxy[:, 2], xyxy[:, 3])
    xs, ys = np.stack([x0, x1]), np.stack([y0, y1])
    return np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)


def read_boxes(
    path: str | os.PathLike[str],
    image: str | os.PathLike[str],
    grid: Grid,
    coords: str = "pixel",
    class_field: str | None = None,
) -> Boxes:
    """The boxes of one image from a CSV table, a Pascal VOC file or a vector file.

    Args:
        path: Box file.
        image: The image path (CSV rows are matched by file name in ``image_path``).
        grid: The image's grid.
        coords: ``"pixel"`` or ``"map"`` (CSV only; VOC is pixel, vectors are map).
        class_field: Vector files: attribute with the class name (default: one class).

    Returns:
        The boxes, clipped to the image.

    Raises:
        LabelError: On a malformed file or unknown coordinate kind.
    """
    if coords not in ("pixel", "map"):
        raise LabelError(f"box coordinates must be 'pixel' or 'map', got {coords!r}")
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        table = pd.read_csv(path)
        missing = {"xmin", "ymin", "xmax", "ymax"} - set(table.columns)
        if missing:
            raise LabelError(
                f"{path} lacks columns {sorted(missing)}; expected "
                "image_path,xmin,ymin,xmax,ymax,label"
            )
        if "image_path" in table.columns:
            table = table[table["image_path"].map(lambda p: Path(str(p)).name) == Path(image).name]
        xyxy = table[["xmin", "ymin", "xmax", "ymax"]].to_numpy(np.float64).reshape(-1, 4)
        names = (
            [str(n) for n in table["label"]]
            if "label" in table.columns
            else ["object"] * len(table)
        )
        if coords == "map":
            xyxy = _map_to_pixel(xyxy, grid)
    elif suffix == ".xml":
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as err:
            raise LabelError(f"{path} is not a Pascal VOC XML file ({err})") from err
        rows, names = [], []
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            rows.append([float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")])
            names.append(obj.findtext("name", "object"))
        xyxy = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    elif suffix in VECTOR_SUFFIXES:
        if grid.crs is None:
            raise LabelError(f"vector boxes {path} need a georeferenced image")
        frame = _read_vector(path)
        if frame.crs is None:
            raise LabelError(f"{path} has no CRS; save it with one (e.g. EPSG:4326)")
        frame = frame.to_crs(grid.crs)
        xyxy = _map_to_pixel(frame.geometry.bounds.to_numpy(np.float64), grid)
        names = [str(v) for v in frame[class_field]] if class_field else ["object"] * len(frame)
    else:
        raise LabelError(
            f"{path}: boxes must be a .csv table, a Pascal VOC .xml or a vector file "
            f"({', '.join(VECTOR_SUFFIXES)})"
        )
    if not np.isfinite(xyxy).all():
        raise LabelError(f"{path} holds boxes with missing coordinates")
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, grid.width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, grid.height)
    keep = (xyxy[:, 2] > xyxy[:, 0] + 1) & (xyxy[:, 3] > xyxy[:, 1] + 1)
    return Boxes(xyxy[keep].astype(np.float32), [n for n, k in zip(names, keep, strict=True) if k])
