"""Draw `geopera predict` results for the docs.

Usage::

    python docs/scripts/predict_figure.py segmentation IMAGE PREDICTION POLYGONS OUT.png
    python docs/scripts/predict_figure.py change BEFORE AFTER PREDICTION TRUTH OUT.png
    python docs/scripts/predict_figure.py detection IMAGE BOXES.gpkg TRUTH.csv OUT.png

The pictures in docs/img are made from ../shared/data (SpaceNet 4 Atlanta CC-BY-SA-4.0, OSCD
CC-BY-4.0 with Copernicus Sentinel-2 data, NEON CC0 via DeepForest).
"""

import sys

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import rasterio
from matplotlib.patches import Rectangle


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C) or (H, W), 2-98 % per band."""
    lo = np.percentile(pixels, 2, axis=(1, 2), keepdims=True)
    hi = np.percentile(pixels, 98, axis=(1, 2), keepdims=True)
    out = np.clip((pixels - lo) / np.maximum(hi - lo, 1e-6), 0, 1)
    return out[0] if out.shape[0] == 1 else np.transpose(out, (1, 2, 0))


def _read(path: str, bands: list[int]) -> tuple[np.ndarray, tuple[float, ...], object]:
    with rasterio.open(path) as ds:
        extent = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)
        return _stretch(ds.read(bands).astype(np.float32)), extent, ds.crs


def segmentation(image: str, prediction: str, polygons: str, out: str) -> None:
    """Image with label polygons | image with predicted class 1 in red."""
    pixels, extent, crs = _read(image, [1])
    with rasterio.open(prediction) as ds:
        classes = ds.read(1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    titles = ("image and building polygons", "prediction (red: building)")
    for ax, title in zip(axes, titles, strict=True):
        ax.imshow(pixels, cmap="gray", extent=extent)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    gpd.read_file(polygons).to_crs(crs).boundary.plot(ax=axes[0], color="cyan", linewidth=0.8)
    overlay = np.ma.masked_where(classes != 1, classes)
    axes[1].imshow(overlay, cmap="autumn_r", alpha=0.55, extent=extent, vmin=0, vmax=1)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def change(before: str, after: str, prediction: str, truth: str, out: str) -> None:
    """Before | after (RGB: B04, B03, B02) | truth | prediction."""
    panels = [("before", _read(before, [4, 3, 2])[0]), ("after", _read(after, [4, 3, 2])[0])]
    with rasterio.open(truth) as ds:
        panels.append(("truth (white: change)", ds.read(1).astype(np.float32)))
    with rasterio.open(prediction) as ds:
        pred = ds.read(1).astype(np.float32)
        pred[pred == 255] = 0.5  # nodata / outside the ROI: gray
        panels.append(("prediction (gray: outside ROI)", pred))
    fig, axes = plt.subplots(1, 4, figsize=(14, 4.2))
    for ax, (title, array) in zip(axes, panels, strict=True):
        ax.imshow(array, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def detection(image: str, boxes: str, truth: str, out: str) -> None:
    """Image with truth boxes (green) and predicted boxes (red)."""
    pixels, extent, crs = _read(image, [1, 2, 3])
    with rasterio.open(image) as ds:
        transform = ds.transform
    fig, ax = plt.subplots(figsize=(6, 6.2))
    ax.imshow(pixels, extent=extent)
    table = pd.read_csv(truth)
    for row in table.itertuples():
        x0, y0 = transform * (row.xmin, row.ymax)
        x1, y1 = transform * (row.xmax, row.ymin)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=1))
    found = gpd.read_file(boxes).to_crs(crs)
    found.boundary.plot(ax=ax, color="red", linewidth=1)
    ax.set_title(f"truth (green, {len(table)}) and predictions (red, {len(found)})", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    kinds = {"segmentation": segmentation, "change": change, "detection": detection}
    kinds[sys.argv[1]](*sys.argv[2:])
