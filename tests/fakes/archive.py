"""Generator of a small, messy fake raster archive (torchgeo style: data made by code).

The archive holds, with known expected outcomes:

* ``landsat/LC08_fake_A.tif`` and ``LC08_fake_B.tif``: 3-band uint16, EPSG:32621, 30 m,
  128 px, overlapping by 64 px, band descriptions B4/B3/B2, nodata 0 with an 8 px border;
* ``sentinel2/T33TWM_20200101_B02.tif`` ... ``_B08.tif``: band-separate uint16, EPSG:32633,
  10 m, 96 px (one 4-band item);
* ``aerial/ortho_tile.tif``: 3-band uint8, EPSG:32618, 0.5 m, 160 px;
* ``albers/albers_scene.tif``: 1-band int16, custom Albers WKT CRS (no EPSG code), 30 m, 64 px,
  nodata -9999;
* ``sar/S1A_scene_VV.tif`` + ``_VH.tif``: float32, EPSG:32631, 10 m, 64 px, NaN border;
* broken files: ``broken/truncated.tif`` (cut in half), ``broken/nocrs.tif`` (no CRS),
  ``broken/empty.tif`` (0 bytes); non-rasters ``notes.txt`` and ``labels.geojson`` (ignored).
"""

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

ALBERS_WKT = (
    'PROJCS["Custom Albers",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,'
    '298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
    'PROJECTION["Albers_Conic_Equal_Area"],PARAMETER["latitude_of_center",23],'
    'PARAMETER["longitude_of_center",-96],PARAMETER["standard_parallel_1",29.5],'
    'PARAMETER["standard_parallel_2",45.5],PARAMETER["false_easting",0],'
    'PARAMETER["false_northing",0],UNIT["metre",1]]'
)

#: Origins (upper-left) of the fake scenes, in their CRSs.
LANDSAT_ORIGIN = (700000.0, -2790000.0)
SENTINEL_ORIGIN = (500000.0, 5100000.0)
AERIAL_ORIGIN = (300000.0, 4500000.0)
ALBERS_ORIGIN = (-800000.0, 2000000.0)
SAR_ORIGIN = (600000.0, 5750000.0)


def write_raster(
    path: Path,
    data: np.ndarray,
    crs: CRS | str | None,
    origin: tuple[float, float],
    res: float,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
    tiled: bool = False,
) -> None:
    """Write an array (C, H, W) as a GeoTIFF.

    Args:
        path: Output path (folders are created).
        data: Pixels, shape (C, H, W).
        crs: CRS, or None for a raster without CRS.
        origin: Upper-left corner (x, y).
        res: Pixel size.
        nodata: Nodata value.
        descriptions: Band descriptions.
        tiled: Write 16x16 tiles.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "transform": from_origin(origin[0], origin[1], res, res),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if descriptions:
            dst.descriptions = descriptions


def _texture(
    rng: np.random.Generator, shape: tuple[int, ...], low: float, high: float
) -> np.ndarray:
    """Smooth random texture in [low, high]: not constant, so it passes quality control."""
    noise = rng.random(shape)
    yy, xx = np.meshgrid(np.arange(shape[-2]), np.arange(shape[-1]), indexing="ij")
    ramp = (np.sin(xx / 7.0) + np.cos(yy / 5.0) + 2) / 4
    return low + (high - low) * (0.5 * noise + 0.5 * ramp)


def make_fake_archive(root: Path, seed: int = 0) -> Path:
    """Create the fake archive under ``root`` (see module docstring).

    Args:
        root: Folder to create.
        seed: Random seed of the pixel values.

    Returns:
        ``root``.
    """
    rng = np.random.default_rng(seed)
    # Landsat-like, overlapping tiles with nodata borders.
    for name, shift in (("A", 0), ("B", 64)):
        data = _texture(rng, (3, 128, 128), 5000, 20000).astype(np.uint16)
        data[:, :8, :] = 0
        data[:, :, -8:] = 0
        origin = (LANDSAT_ORIGIN[0] + shift * 30, LANDSAT_ORIGIN[1] - shift * 30)
        write_raster(
            root / "landsat" / f"LC08_fake_{name}.tif",
            data,
            "EPSG:32621",
            origin,
            30.0,
            nodata=0,
            descriptions=("B4", "B3", "B2"),
        )
    # Sentinel-2-like, band-separate files of one scene.
    for band in ("B02", "B03", "B04", "B08"):
        data = _texture(rng, (1, 96, 96), 500, 4000).astype(np.uint16)
        write_raster(
            root / "sentinel2" / f"T33TWM_20200101_{band}.tif",
            data,
            "EPSG:32633",
            SENTINEL_ORIGIN,
            10.0,
        )
    # Aerial, 0.5 m, uint8.
    data = _texture(rng, (3, 160, 160), 0, 255).astype(np.uint8)
    write_raster(root / "aerial" / "ortho_tile.tif", data, "EPSG:32618", AERIAL_ORIGIN, 0.5)
    # Custom WKT CRS, signed integers.
    data = _texture(rng, (1, 64, 64), -500, 3000).astype(np.int16)
    data[:, -4:, :] = -9999
    write_raster(
        root / "albers" / "albers_scene.tif",
        data,
        CRS.from_wkt(ALBERS_WKT),
        ALBERS_ORIGIN,
        30.0,
        nodata=-9999,
    )
    # SAR, float32, band-separate polarisations with a NaN border.
    for pol in ("VV", "VH"):
        data = _texture(rng, (1, 64, 64), -25, 0).astype(np.float32)
        data[:, :, :6] = np.nan
        write_raster(root / "sar" / f"S1A_scene_{pol}.tif", data, "EPSG:32631", SAR_ORIGIN, 10.0)
    # Broken files.
    broken = root / "broken"
    data = _texture(rng, (1, 256, 256), 0, 255).astype(np.uint8)
    write_raster(broken / "truncated.tif", data, "EPSG:32621", LANDSAT_ORIGIN, 30.0, tiled=True)
    raw = (broken / "truncated.tif").read_bytes()
    (broken / "truncated.tif").write_bytes(raw[: len(raw) // 2])
    write_raster(broken / "nocrs.tif", data[:, :32, :32], None, (0.0, 32.0), 1.0)
    (broken / "empty.tif").write_bytes(b"")
    # Non-rasters.
    (root / "notes.txt").write_text("not a raster")
    (root / "labels.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    return root
