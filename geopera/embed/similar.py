"""``geopera embed similar``: where else does the ground look like this?

The query is a point or a polygon (WKT, in ``--crs``, default the first raster's CRS) or a chip
id of the chip table. Its vector is the patch token under the point, the mean of the tokens whose
centres lie inside the polygon, or the chip's embedding. Outputs, in a new folder:

* ``similarity_<name>.tif``: cosine similarity of every patch token to the query (float32 COG
  on the patch grid, NaN where the embeddings are nodata), one per raster with patch embeddings;
* ``top_chips.geojson``: the ``--top`` chips most similar to the query (WGS 84), with their
  ``chip_id``, ``source``, ``similarity`` and ``rank``, when the folder has chip embeddings.
"""

import math
import os
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import rasterio.shutil
import shapely
from pyproj import CRS, Transformer
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from geopera.core.contracts import EmbeddingSet
from geopera.core.names import NameBook, inside
from geopera.core.outputs import atomic_file, staged_folder
from geopera.data.labelled.windows import bounded_gdal_cache
from geopera.embed.errors import EmbedError

#: Token rows read at a time while mapping the similarity.
ROWS_PER_READ = 256


@dataclass
class SimilarSummary:
    """What ``similar`` wrote.

    Attributes:
        out: The output folder.
        maps: The similarity COGs.
        top: The top-chips GeoJSON, if written.
    """

    out: Path
    maps: list[Path]
    top: Path | None


def _read_tokens(ds: rasterio.DatasetReader, window: Window) -> np.ndarray:
    """(D, h, w) float32 token values, NaN where nodata (int8 de-quantised)."""
    data = ds.read(window=window).astype(np.float32)
    if ds.dtypes[0] == "int8":
        invalid = data == ds.nodata
        scales = np.asarray(ds.scales, dtype=np.float32)[:, None, None]
        offsets = np.asarray(ds.offsets, dtype=np.float32)[:, None, None]
        data = data * scales + offsets
        data[invalid] = np.nan
    return data


def _geometry(query: str) -> BaseGeometry | None:
    """The query's WKT geometry, or None where it is not WKT (then it may be a chip id)."""
    try:
        geom = shapely.from_wkt(query)
    except shapely.errors.GEOSException:
        return None
    if not np.isfinite(shapely.get_coordinates(geom)).all():
        raise EmbedError(f"--query {query} has a coordinate that is not a finite number")
    return geom


def _outward(win: Window) -> Window:
    """The smallest whole-pixel window that covers a fractional one."""
    col0, row0 = math.floor(win.col_off), math.floor(win.row_off)
    col1 = math.ceil(win.col_off + win.width)
    row1 = math.ceil(win.row_off + win.height)
    return Window(col0, row0, col1 - col0, row1 - row0)


def _query_vector(manifest: EmbeddingSet, folder: Path, query: str, crs: str | None) -> np.ndarray:
    """(D,) float32 vector of the query."""
    geom = _geometry(query)
    if geom is None:  # a chip id
        for entry in manifest.rasters:
            if entry.chips is None:
                continue
            table = gpd.read_parquet(folder / entry.chips)
            hit = table[table["chip_id"] == query]
            if len(hit):
                return np.asarray(hit["embedding"].iloc[0], dtype=np.float32)
        raise EmbedError(
            f"--query {query!r} is neither WKT (POINT(x y), POLYGON(...)) nor a chip id of "
            f"{folder} (ids look like NAME:ROW:COL)"
        )
    try:
        query_crs = CRS.from_user_input(crs or manifest.rasters[0].crs)
    except Exception as err:  # pyproj.exceptions.CRSError
        raise EmbedError(f"--crs {crs!r} is not a CRS PROJ knows ({err}); e.g. EPSG:4326") from err
    for entry in manifest.rasters:
        if entry.patches is None:
            continue
        with rasterio.open(folder / entry.patches) as ds:
            to_raster = Transformer.from_crs(query_crs, ds.crs, always_xy=True)
            local = shapely.transform(
                geom, lambda xy, t=to_raster: np.column_stack(t.transform(xy[:, 0], xy[:, 1]))
            )
            if not shapely.box(*ds.bounds).intersects(local):
                continue
            if local.geom_type == "Point":
                row, col = ds.index(local.x, local.y)
                vec = _read_tokens(ds, Window(col, row, 1, 1))[:, 0, 0]
                if np.isnan(vec).any():
                    raise EmbedError(f"--query {query} falls on nodata in {entry.patches}")
                return vec
            # the polygon's part on the raster (its corners may lie at infinity after reprojection)
            r, b = ds.bounds, local.bounds
            clipped = (max(b[0], r.left), max(b[1], r.bottom), min(b[2], r.right), min(b[3], r.top))
            win = _outward(rasterio.windows.from_bounds(*clipped, transform=ds.transform))
            win = win.intersection(Window(0, 0, ds.width, ds.height))
            tokens = _read_tokens(ds, win)  # (D, h, w)
            inside = rasterio.features.geometry_mask(
                [local],
                (int(win.height), int(win.width)),
                ds.window_transform(win),
                invert=True,
                all_touched=False,
            )
            inside &= ~np.isnan(tokens).any(0)
            if inside.any():
                return tokens[:, inside].mean(1)
    raise EmbedError(
        f"--query {query} lies outside the embeddings' extent (or only on nodata); "
        f"give coordinates in {query_crs.to_string()} (or set --crs) inside the rasters of "
        f"{folder}"
    )


def _cosine(tokens: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(D, h, w) tokens, (D,) query -> (h, w) cosine similarity (NaN where nodata)."""
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    norms = np.linalg.norm(tokens, axis=0)  # (h, w)
    return np.einsum("dhw,d->hw", tokens, q) / np.maximum(norms, 1e-12)


def _similarity_map(source: Path, query: np.ndarray, out: Path) -> None:
    scratch = out.with_name(f".{out.name}.scratch-{os.getpid()}")
    try:
        with rasterio.open(source) as ds:
            profile = {
                "driver": "GTiff",
                "width": ds.width,
                "height": ds.height,
                "count": 1,
                "dtype": "float32",
                "nodata": float("nan"),
                "crs": ds.crs,
                "transform": ds.transform,
                "tiled": True,
                "blockxsize": 256,
                "blockysize": 256,
            }
            with rasterio.open(scratch, "w", **profile) as dst:
                for row in range(0, ds.height, ROWS_PER_READ):
                    win = Window(0, row, ds.width, min(ROWS_PER_READ, ds.height - row))
                    sim = _cosine(_read_tokens(ds, win), query).astype(np.float32)
                    dst.write(sim[None], window=win)
                dst.update_tags(geopera_similarity_of=str(source.name))
        with atomic_file(out) as cog:
            rasterio.shutil.copy(scratch, cog, driver="COG", compress="DEFLATE")
    finally:
        if scratch.exists():
            scratch.unlink()


def _top_chips(
    manifest: EmbeddingSet, folder: Path, query: np.ndarray, top: int, out: Path
) -> bool:
    frames = []
    for entry in manifest.rasters:
        if entry.chips is None:
            continue
        table = gpd.read_parquet(folder / entry.chips)
        if not len(table):
            continue
        vectors = np.stack(table["embedding"].map(np.asarray).tolist()).astype(np.float32)
        q = query / max(float(np.linalg.norm(query)), 1e-12)
        norms = np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        table = table.assign(similarity=vectors @ q / norms).drop(columns=["embedding"])
        frames.append(table.to_crs("EPSG:4326"))
    if not frames:
        return False
    both = gpd.GeoDataFrame(
        gpd.pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326"
    )
    best = both.sort_values("similarity", ascending=False).head(top).reset_index(drop=True)
    best["rank"] = np.arange(1, len(best) + 1)
    with atomic_file(out) as tmp:
        best.to_file(tmp, driver="GeoJSON")
    return True


@bounded_gdal_cache
def similar(
    embeddings: Path, query: str, out: Path, crs: str | None = None, top: int = 10
) -> SimilarSummary:
    """Map the similarity of every patch and rank the chips against a query.

    Args:
        embeddings: A ``geopera embed`` folder.
        query: ``POINT(x y)``, any WKT geometry, or a chip id.
        out: New output folder.
        crs: CRS of a WKT query (default: the first raster's CRS).
        top: Number of chips in ``top_chips.geojson``.

    Returns:
        What was written.

    Raises:
        FileNotFoundError: If ``embeddings`` is not an embed folder.
        EmbedError: If the query is invalid or outside the embeddings' extent.
    """
    if top < 1:
        raise EmbedError(f"--top must be at least 1, got {top}")
    manifest = EmbeddingSet.read(embeddings / EmbeddingSet.FILE)
    vector = _query_vector(manifest, embeddings, query, crs)
    maps: list[Path] = []
    book = NameBook(taken=("top_chips.geojson",))  # raster names come from embeddings.json
    with staged_folder(out) as work:
        for entry in manifest.rasters:
            if entry.patches is not None:
                name = book.claim(f"similarity_{entry.name}", ".tif")
                _similarity_map(embeddings / entry.patches, vector, inside(work, work / name))
                maps.append(out / name)
        wrote = _top_chips(manifest, embeddings, vector, top, work / "top_chips.geojson")
    return SimilarSummary(out, maps, out / "top_chips.geojson" if wrote else None)
