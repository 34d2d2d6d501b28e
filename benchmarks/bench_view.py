"""How fast ``geopera view`` answers a click: the chip ranking, the heatmap, and a map tile.

A synthetic embed folder of ``--chips`` chips (default 100k, ``--dim`` 384 float32 embeddings,
footprints on a grid in UTM) and a patch-embedding COG of ``--tokens`` x ``--tokens`` tokens:

* ``rank``: the top 10 of every chip against one query, with the chips in memory
  (:class:`geopera.embed.similar.ChipIndex`, a plain matrix product), against the same ranking
  reading the GeoParquet for each query as ``embed similar`` does (the baseline, in the same run);
* ``heatmap``: the cosine similarity of every token to the query, written as a COG (the layer a
  click adds);
* ``tile``: one 256 px PNG of that heatmap at a zoom where it spans a few tiles (rio-tiler).

Each is the median of ``--rounds``. Usage: ``python -m benchmarks.bench_view [--json]``
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import geopandas as gpd
import morecantile
import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

from geopera.embed.similar import ChipIndex, similarity_map
from geopera.view.layers import raster_layer
from geopera.view.tiles import tile_png

ORIGIN = (500_000.0, 5_000_000.0)  # UTM 33N metres
CHIP_M = 640.0


def median_seconds(work: Callable[[], object], rounds: int) -> float:
    """The median wall time of ``rounds`` calls."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chip_table(count: int, dim: int, path: Path) -> gpd.GeoDataFrame:
    """``count`` chips on a square grid with random embeddings, written as GeoParquet."""
    rng = np.random.default_rng(0)
    side = int(np.ceil(np.sqrt(count)))
    rows, cols = np.divmod(np.arange(count), side)
    x0, y0 = ORIGIN[0] + cols * CHIP_M, ORIGIN[1] - rows * CHIP_M
    table = gpd.GeoDataFrame(
        {
            "chip_id": [f"s:{r}:{c}" for r, c in zip(rows, cols, strict=True)],
            "embedding": list(rng.standard_normal((count, dim)).astype(np.float32)),
        },
        geometry=shapely.box(x0, y0 - CHIP_M, x0 + CHIP_M, y0),
        crs="EPSG:32633",
    )
    table.to_parquet(path)
    return table


def token_cog(tokens: int, dim: int, path: Path) -> None:
    """A patch-embedding COG of ``tokens`` x ``tokens`` float16 tokens of ``dim`` bands."""
    rng = np.random.default_rng(1)
    profile = {
        "driver": "COG", "width": tokens, "height": tokens, "count": dim, "dtype": "float16",
        "crs": "EPSG:32633", "transform": from_origin(*ORIGIN, 160.0, 160.0),
        "compress": "zstd",
    }  # fmt: skip
    with rasterio.MemoryFile() as mem:
        with mem.open(**{**profile, "driver": "GTiff"}) as tmp:
            tmp.write(rng.standard_normal((dim, tokens, tokens)).astype(np.float16))
        with mem.open() as src:
            rasterio.shutil.copy(src, path, **profile)


def baseline_rank(path: Path, query: np.ndarray) -> None:
    """What ``embed similar`` does per query: read the table, score every chip, sort."""
    table = gpd.read_parquet(path)
    vectors = np.stack(table["embedding"].map(np.asarray).tolist()).astype(np.float32)
    scores = vectors @ query / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
    table.assign(similarity=scores).sort_values("similarity", ascending=False).head(10)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every timing, in seconds, and the in-memory ranking's speed-up."""
    table = chip_table(args.chips, args.dim, work / "chips.parquet")
    started = time.perf_counter()
    index = ChipIndex.load_frames([table])
    load = time.perf_counter() - started
    if index is None:
        raise ValueError("--chips must be at least 1")
    query = np.random.default_rng(2).standard_normal(args.dim).astype(np.float32)
    rank = median_seconds(lambda: index.top(query, 10), args.rounds)
    baseline = median_seconds(lambda: baseline_rank(work / "chips.parquet", query), args.rounds)
    token_cog(args.tokens, args.dim, work / "tokens.tif")
    heat = work / "heat.tif"
    heatmap = median_seconds(lambda: similarity_map(work / "tokens.tif", query, heat), 3)
    (layer,) = raster_layer(heat)
    w, s, e, n = layer.bounds
    tile = morecantile.tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, 12)
    tile_s = median_seconds(lambda: tile_png(layer, tile.z, tile.x, tile.y), args.rounds)
    return {
        "chips": args.chips, "dim": args.dim, "tokens": args.tokens,
        "load_s": load, "rank_s": rank, "baseline_rank_s": baseline,
        "rank_speedup": baseline / rank, "heatmap_s": heatmap, "tile_s": tile_s,
    }  # fmt: skip


def main() -> None:
    """Measure and print (a table, or JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chips", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(args, Path(tmp))
    if args.json:
        print(json.dumps(found, indent=1))
        return
    print(f"{found['chips']} chips x {found['dim']}: load {found['load_s']:.2f} s (once)")
    print(f"  rank (in memory)       {found['rank_s'] * 1e3:8.1f} ms")
    print(f"  rank (reading parquet) {found['baseline_rank_s'] * 1e3:8.1f} ms "
          f"({found['rank_speedup']:.0f}x slower)")  # fmt: skip
    print(f"  heatmap {found['tokens']}^2 tokens  {found['heatmap_s'] * 1e3:8.1f} ms")
    print(f"  one map tile           {found['tile_s'] * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
