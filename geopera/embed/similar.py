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
from geopera.core.stac import write_items
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


def query_vector(manifest: EmbeddingSet, folder: Path, query: str, crs: str | None) -> np.ndarray:
    """(D,) float32 vector of a query: WKT in ``crs`` (default the first raster's) or a chip id.

    Raises:
        EmbedError: If the query is invalid, or outside the embeddings (or on nodata).
    """
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


def similarity_map(source: Path, query: np.ndarray, out: Path) -> None:
    """Write the cosine similarity of every token of ``source`` to ``query`` as a COG."""
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
                dst.update_tags(geopera_kind="similarity", geopera_similarity_of=source.name)
        with atomic_file(out) as cog:
            rasterio.shutil.copy(scratch, cog, driver="COG", compress="DEFLATE")
    finally:
        if scratch.exists():
            scratch.unlink()


@dataclass
class ChipIndex:
    """Every chip embedding of an embed folder in memory, for repeated queries.

    Attributes:
        chips: The chips (without their embeddings), in degrees.
        unit: (N, D) float32 embeddings scaled to unit length.
    """

    chips: gpd.GeoDataFrame
    unit: np.ndarray

    @classmethod
    def load(cls, manifest: EmbeddingSet, folder: Path) -> "ChipIndex | None":
        """The chips of every raster of an embed folder (None if it has none)."""
        tables = [
            gpd.read_parquet(folder / entry.chips)
            for entry in manifest.rasters
            if entry.chips is not None
        ]
        return cls.load_frames([t for t in tables if len(t)])

    @classmethod
    def load_frames(cls, tables: list[gpd.GeoDataFrame]) -> "ChipIndex | None":
        """The chips of chip tables (with their ``embedding`` column); None without any."""
        if not tables:
            return None
        vectors = [np.stack(t["embedding"].map(np.asarray).tolist()) for t in tables]
        unit = np.concatenate(vectors).astype(np.float32)  # (N, D)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        frames = [t.drop(columns=["embedding"]).to_crs("EPSG:4326") for t in tables]
        chips = gpd.GeoDataFrame(
            gpd.pd.concat(frames, ignore_index=True), geometry="geometry", crs="EPSG:4326"
        )
        return cls(chips, unit)

    def top(self, query: np.ndarray, count: int) -> gpd.GeoDataFrame:
        """The ``count`` chips most similar to ``query``, with ``similarity`` and ``rank``."""
        q = (query / max(float(np.linalg.norm(query)), 1e-12)).astype(np.float32)
        scores = self.unit @ q  # (N,)
        best = np.argsort(-scores, kind="stable")[:count]
        found = self.chips.iloc[best].assign(similarity=scores[best]).reset_index(drop=True)
        found["rank"] = np.arange(1, len(found) + 1)
        return found


def write_answer(
    manifest: EmbeddingSet, folder: Path, query: np.ndarray, top: int, work: Path,
    index: ChipIndex | None,
) -> list[str]:  # fmt: skip
    """The answer's files in ``work``: a similarity COG per patch raster, ``top_chips.geojson``.

    Returns:
        The names of the files written.
    """
    written = []
    book = NameBook(taken=("top_chips.geojson",))  # raster names come from embeddings.json
    for entry in manifest.rasters:
        if entry.patches is not None:
            name = book.claim(f"similarity_{entry.name}", ".tif")
            similarity_map(folder / entry.patches, query, inside(work, work / name))
            written.append(name)
    if index is not None:
        with atomic_file(work / "top_chips.geojson") as tmp:
            index.top(query, top).to_file(tmp, driver="GeoJSON")
        written.append("top_chips.geojson")
    return written


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
    vector = query_vector(manifest, embeddings, query, crs)
    index = ChipIndex.load(manifest, embeddings)
    with staged_folder(out) as work:
        written = write_answer(manifest, embeddings, vector, top, work, index)
        properties = {"geopera:query": query, "geopera:embeddings": str(embeddings)}
        write_items([work / name for name in written], properties, "geopera embed similar")
    maps = [out / name for name in written if name.endswith(".tif")]
    return SimilarSummary(out, maps, out / "top_chips.geojson" if index is not None else None)
