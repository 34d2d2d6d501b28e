"""The first three principal components of a patch-embedding COG, as an RGB GeoTIFF.

Computed once per ``geopera view`` session into its scratch folder: the components are fitted on
up to :data:`SAMPLE` tokens, every token is projected strip by strip, and each component is
stretched between its 2nd and 98th percentiles to 1-255 (0 is nodata).
"""

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

#: Tokens the components are fitted on, at most.
SAMPLE = 20_000
#: Token rows read at a time.
ROWS = 256


def _tokens(ds: rasterio.DatasetReader, win: Window) -> np.ndarray:
    """(h * w, D) float64 tokens of a window, NaN rows where nodata."""
    data = ds.read(window=win).astype(np.float64)  # (D, h, w)
    if ds.nodata is not None:
        data[data == ds.nodata] = np.nan
    return data.reshape(data.shape[0], -1).T  # (D, h, w) -> (h * w, D)


def _fit(ds: rasterio.DatasetReader) -> tuple[np.ndarray, np.ndarray]:
    """The tokens' mean (D,) and the top three components (D, 3)."""
    rng = np.random.default_rng(0)
    every = _tokens(ds, Window(0, 0, ds.width, min(ds.height, ROWS * 4)))
    every = every[np.isfinite(every).all(1)]
    if len(every) < 3:
        raise ValueError(f"{ds.name} holds fewer than 3 valid tokens")
    sample = every[rng.permutation(len(every))[:SAMPLE]]
    mean = sample.mean(0)
    _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)  # rows of vt: components
    return mean, vt[:3].T


def pca_rgb(source: Path, out: Path) -> Path:
    """Write the RGB of ``source``'s first three components to ``out`` (uint8, nodata 0)."""
    with rasterio.open(source) as ds:
        mean, components = _fit(ds)
        strips = []
        for row in range(0, ds.height, ROWS):
            win = Window(0, row, ds.width, min(ROWS, ds.height - row))
            strips.append((_tokens(ds, win) - mean) @ components)  # (h * w, 3)
        projected = np.concatenate(strips)  # (H * W, 3)
        valid = np.isfinite(projected).all(1)
        low, high = np.percentile(projected[valid], [2, 98], axis=0)
        scaled = np.clip((projected - low) / np.maximum(high - low, 1e-12), 0, 1) * 254 + 1
        rgb = np.where(valid[:, None], scaled, 0).astype(np.uint8)
        image = rgb.T.reshape(3, ds.height, ds.width)  # (H * W, 3) -> (3, H, W)
        profile = {
            "driver": "GTiff", "width": ds.width, "height": ds.height, "count": 3,
            "dtype": "uint8", "nodata": 0, "crs": ds.crs, "transform": ds.transform,
        }  # fmt: skip
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(image)
        dst.update_tags(geopera_kind="embedding-pca", geopera_pca_of=source.name)
        factors = [f for f in (2, 4, 8, 16, 32) if max(image.shape[1:]) // f >= 256]
        if factors:  # low zooms read the overviews, not every token
            dst.build_overviews(factors, Resampling.nearest)
    return out
