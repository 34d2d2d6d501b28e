"""Draw a `geopera predict segmentation` result over its image, with the label polygons.

Usage: ``python docs/scripts/predict_figure.py IMAGE PREDICTION POLYGONS OUT.png``
(docs/img/atlanta-buildings.png: SpaceNet 4 Atlanta, CC-BY-SA-4.0, from ../shared/data).
"""

import sys

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio


def main(image: str, prediction: str, polygons: str, out: str) -> None:
    """Write the two-panel figure (image + polygons, prediction overlay) to ``out``."""
    with rasterio.open(image) as ds:
        pixels = ds.read(1).astype(np.float32)
        extent = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)
        crs = ds.crs
    with rasterio.open(prediction) as ds:
        classes = ds.read(1)
    lo, hi = np.percentile(pixels, [2, 98])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, title in zip(
        axes, ("image and building polygons", "prediction (red: building)"), strict=True
    ):
        ax.imshow(np.clip((pixels - lo) / (hi - lo), 0, 1), cmap="gray", extent=extent)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    gpd.read_file(polygons).to_crs(crs).boundary.plot(ax=axes[0], color="cyan", linewidth=0.8)
    overlay = np.ma.masked_where(classes != 1, classes)
    axes[1].imshow(overlay, cmap="autumn_r", alpha=0.55, extent=extent, vmin=0, vmax=1)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


if __name__ == "__main__":
    main(*sys.argv[1:5])
