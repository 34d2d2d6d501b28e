"""Patches per second per loader core: raw rasters, tile-aligned reads, shards on disk and on S3.

All cases read 256 px patches of 13 uint16 bands, with GDAL's block cache at 16 MB (what a
large archive sees: random patches rarely hit a tile twice), measured in one run:

* ``raw``: rasterio windows at random offsets (``unaligned``) and moved onto the internal tiles
  (``aligned``, :func:`geopera.data.sources.remote.align_to_tiles`), for a stacked 13-band
  GeoTIFF (DEFLATE + predictor, 512 px tiles) and for 13 single-band COGs (DEFLATE, 1024 px
  tiles, like public Sentinel-2 COGs);
* ``geopera``: the pretraining reader (``PatchDataset``, quality control included) on the
  stacked files, with tile alignment off (the reader before it) and on;
* ``shards``: ``geopera archive shards`` of the stacked archive, streamed by
  ``ShardDataModule``'s loader from the local disk and from a local S3 server (moto, on
  127.0.0.1), with 1 and 2 workers; per core is the rate divided by the workers. Each is read
  twice: ``..._first_pass`` decompresses every chunk into LitData's cache (what each pass costs
  when the set is larger than the cache), the plain key is the second pass, from that cache;
* ``raw_stacked_unaligned_gdal_2_threads``: the unaligned stacked reads with GDAL decoding the
  blocks of a read in 2 threads (``GDAL_NUM_THREADS``): a rate of the process, not per core;
* ``tile_decode_ms``: one whole 512 px tile of the stacked file read and decoded by GDAL and
  by async-tiff (Rust, GIL-free), each on one thread;
* ``index``: the archive index of ``--index-files`` tiny GeoTIFFs: a first build with 1 and 2
  processes, and its reuse (extrapolated to 100k files).

The archive is made of real Sentinel-2 L1C pixels (the OSCD scene of ``../shared/data``, tiled
with flips over ``--size`` px scenes). Usage: ``python -m benchmarks.bench_loader [--size PX]
[--scenes N] [--patches N] [--index-files N] [--json]``
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ["GDAL_CACHEMAX"] = "16"  # before rasterio loads GDAL: a small cache, as at scale
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from benchmarks.common.paths import shared_data_dir
from geopera.data.sources.remote import align_to_tiles

SHARED = shared_data_dir()
SCENE = SHARED / "c_change_detection" / "oscd_bercy" / "T1_S2L1C_13bands_10m.tif"
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
PATCH = 256


def mosaic(size: int, seed: int) -> np.ndarray:
    """(13, size, size) uint16 from the real scene, tiled with random flips."""
    with rasterio.open(SCENE) as src:
        real = src.read()  # (13, 395, 360)
    rng = np.random.default_rng(seed)
    out = np.empty((13, size, size), dtype=np.uint16)
    h, w = real.shape[1:]
    for y in range(0, size, h):
        for x in range(0, size, w):
            piece = real[:, :: rng.choice([-1, 1]), :: rng.choice([-1, 1])]
            out[:, y : y + h, x : x + w] = piece[:, : size - y, : size - x]
    return out


def build(work: Path, size: int, scenes: int) -> dict[str, list[Any]]:
    """Both layouts of ``scenes`` mosaics: stacked files and per-band COG folders."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy

    layouts: dict[str, list[Any]] = {"stacked": [], "per_band": []}
    for n in range(scenes):
        data = mosaic(size, n)
        profile = {
            "driver": "GTiff", "dtype": "uint16", "count": 13, "width": size, "height": size,
            "crs": "EPSG:32631", "transform": from_origin(440000 + n * 30000, 5420000, 10, 10),
        }  # fmt: skip
        stacked = work / "stacked" / f"S2_scene{n}.tif"
        stacked.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(stacked, "w", **profile, tiled=True, blockxsize=512, blockysize=512,
                           compress="deflate", predictor=2) as dst:  # fmt: skip
            dst.write(data)
            dst.descriptions = tuple(BANDS)
        layouts["stacked"].append([str(stacked)])
        files = []
        for b, name in enumerate(BANDS):
            path = work / "per_band" / f"scene{n}" / f"{name}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            with MemoryFile() as mem:
                with mem.open(**{**profile, "count": 1}) as tmp:
                    tmp.write(data[b : b + 1])
                with mem.open() as tmp:
                    copy(tmp, str(path), driver="COG", BLOCKSIZE=1024, COMPRESS="DEFLATE",
                         OVERVIEWS="NONE")  # fmt: skip
            files.append(str(path))
        layouts["per_band"].append(files)
    return layouts


def raw_rate(
    scenes: list[list[str]], size: int, n: int, aligned: bool, gdal_threads: int = 1
) -> float:
    """Patches/s of rasterio windows at random offsets, optionally moved onto the tiles.

    ``gdal_threads`` above 1 lets GDAL decode the blocks of one read in parallel threads.
    """
    with rasterio.Env(GDAL_NUM_THREADS=str(gdal_threads)):
        return _raw_reads(scenes, size, n, aligned)


def _raw_reads(scenes: list[list[str]], size: int, n: int, aligned: bool) -> float:
    rng = np.random.default_rng(0)
    handles = [[rasterio.open(p) for p in files] for files in scenes]
    tile = handles[0][0].block_shapes[0][0]
    start = time.perf_counter()
    for _ in range(n):
        files = handles[int(rng.integers(len(handles)))]
        col, row = (int(v) for v in rng.integers(0, size - PATCH, 2))
        if aligned:
            col, row = (
                align_to_tiles(col, PATCH, tile, size),
                align_to_tiles(row, PATCH, tile, size),
            )
        window = Window(col, row, PATCH, PATCH)
        parts = [f.read(window=window) for f in files]  # (13 or 1, H, W) each
        assert sum(p.shape[0] for p in parts) == 13
    elapsed = time.perf_counter() - start
    for files in handles:
        for f in files:
            f.close()
    return n / elapsed


def tile_decode_ms(path: str, tiles: int = 60) -> dict[str, float]:
    """Milliseconds to read and decode one whole 512 px tile: GDAL and async-tiff, one thread.

    async-tiff decodes in Rust without the GIL (``decode_sync`` on this thread here, so both
    use one core); the tiles are the same random ones for both, and the pixels are checked equal.
    """
    import asyncio

    rng = np.random.default_rng(1)
    with rasterio.open(path) as src:
        side = src.block_shapes[0][0]
        grid = src.width // side
        xy = [(int(rng.integers(grid)), int(rng.integers(grid))) for _ in range(tiles)]
        start = time.perf_counter()
        for x, y in xy:
            gdal = src.read(window=Window(x * side, y * side, side, side))  # (13, 512, 512)
        gdal_ms = (time.perf_counter() - start) / tiles * 1e3

    try:
        from async_tiff import TIFF, DecoderRegistry
        from obstore.store import LocalStore
    except ImportError:  # not installed: pip install -e ".[bench]"
        return {"gdal": gdal_ms}

    async def decode_all() -> np.ndarray:
        tiff = await TIFF.open(Path(path).name, store=LocalStore(str(Path(path).parent)))
        registry = DecoderRegistry()
        for x, y in xy:
            tile = await tiff.fetch_tile(x, y, 0)
            array = np.asarray(tile.decode_sync(decoder_registry=registry))  # (512, 512, 13)
        return array

    start = time.perf_counter()
    last = asyncio.run(decode_all())
    rust_ms = (time.perf_counter() - start) / tiles * 1e3
    if not np.array_equal(np.moveaxis(last, -1, 0), gdal):  # (H, W, C) -> (C, H, W)
        raise RuntimeError("async-tiff and GDAL decoded different pixels")
    return {"gdal": gdal_ms, "async_tiff": rust_ms}


def geopera_rate(archive: Path, n: int, aligned: bool) -> float:
    """Patches/s of the pretraining reader (0 workers), alignment off or on."""
    from geopera.archive.run import SampleRequest, prepare_sample

    request = SampleRequest(
        [str(archive)], "EPSG:32631;" + _roi_wkt(), PATCH, n, archive.parent / "x"
    )
    prepared = prepare_sample(request)
    if not aligned:
        for sampling in prepared.dataset.sources:
            sampling.reader.align = lambda box: box
    locations = list(prepared.locations)
    start = time.perf_counter()
    for loc in locations:
        prepared.dataset[loc]
    return len(locations) / (time.perf_counter() - start)


def _roi_wkt() -> str:
    return (
        "POLYGON((440000 5380000, 500000 5380000, 500000 5420000, 440000 5420000, 440000 5380000))"
    )


def shard_rates(location: str, workers: int) -> tuple[float, float]:
    """Chips/s of the pretraining loader over shards: a first pass, then a second one.

    The first pass decompresses every chunk into LitData's cache (what every pass costs when
    the shard set is larger than ``data.cache_gb``); the second reads the cached chunks.
    """
    from geopera.data.sampling.datamodule import SamplingSettings
    from geopera.data.sampling.shards import ShardDataModule

    cache = tempfile.mkdtemp(prefix="bench-shard-cache-")
    dm = ShardDataModule(
        location, SamplingSettings(batch_size=32, num_workers=workers, cache=cache)
    )
    rates = []
    for _ in range(2):
        loader = dm.train_dataloader()
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += batch["image"].shape[0]
        rates.append(count / (time.perf_counter() - start))
    return rates[0], rates[1]


def index_times(work: Path, files: int) -> dict[str, float]:
    """First build with 1 and 2 processes, and reuse, of an index of ``files`` tiny rasters."""
    from geopera.data.sources import index
    from geopera.data.sources.files import find_rasters

    folder = work / "many"
    folder.mkdir()
    profile = {"driver": "GTiff", "dtype": "uint8", "count": 1, "width": 16, "height": 16,
               "crs": "EPSG:32631"}  # fmt: skip
    pixels = np.zeros((1, 16, 16), dtype=np.uint8)
    for k in range(files):
        transform = from_origin(440000 + (k % 100) * 160, 5420000 - (k // 100) * 160, 10, 10)
        with rasterio.open(folder / f"f{k:06d}.tif", "w", **profile, transform=transform) as dst:
            dst.write(pixels)
    paths, _ = find_rasters([str(folder)])
    out: dict[str, float] = {}
    for procs, threshold in (("1", 10**9), ("2", 1)):
        index.PARALLEL_FROM = threshold
        index.index_path(str(folder)).unlink(missing_ok=True)
        start = time.perf_counter()
        index.read_indexed(str(folder), paths)
        out[f"build_{procs}_process"] = time.perf_counter() - start
    start = time.perf_counter()
    index.read_indexed(str(folder), paths)
    out["reuse"] = time.perf_counter() - start
    out["reuse_100k_extrapolated"] = out["reuse"] * 100_000 / files
    return out


def shard_cases(work: Path, archive: Path, count: int) -> dict[str, float]:
    """Shards of the stacked archive, from disk and from a local S3 server, 1 and 2 workers."""
    from geopera.cli.main import main

    out_dir = work / "shards"
    args = ["archive", "shards", str(archive), "--roi", "EPSG:32631;" + _roi_wkt()]
    assert main([*args, "--count", str(count), "--size", str(PATCH), "--out", str(out_dir)]) == 0
    rates: dict[str, float] = {}
    for w in (1, 2):
        first, second = shard_rates(str(out_dir), w)
        rates |= {f"shards_disk_{w}w": second / w, f"shards_disk_{w}w_first_pass": first / w}
    from tests.fakes.s3 import s3_server, upload_folder

    with s3_server():
        upload_folder(out_dir, "bench", "shards")
        for w in (1, 2):
            first, second = shard_rates("s3://bench/shards", w)
            rates |= {f"shards_s3_{w}w": second / w, f"shards_s3_{w}w_first_pass": first / w}
    return rates


def main() -> None:
    """Build the archive, measure every case, print the table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    parser.add_argument("--scenes", type=int, default=2)
    parser.add_argument("--patches", type=int, default=120, help="patches per raw case")
    parser.add_argument("--chips", type=int, default=512, help="chips in the shards")
    parser.add_argument("--index-files", type=int, default=10_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        layouts = build(work, args.size, args.scenes)
        result: dict[str, Any] = {"size": args.size, "scenes": args.scenes, "patch": PATCH}
        for layout, scenes in layouts.items():
            for aligned in (False, True):
                key = f"raw_{layout}_{'aligned' if aligned else 'unaligned'}"
                result[key] = raw_rate(scenes, args.size, args.patches, aligned)
        # GDAL's threaded decoding: patches/s of the whole process (2 threads), not per core
        stacked = layouts["stacked"]
        result["raw_stacked_unaligned_gdal_2_threads"] = raw_rate(
            stacked, args.size, args.patches, False, gdal_threads=2
        )
        result["tile_decode_ms"] = tile_decode_ms(stacked[0][0])
        for aligned in (False, True):
            key = f"geopera_stacked_{'aligned' if aligned else 'unaligned'}"
            result[key] = geopera_rate(work / "stacked", args.patches, aligned)
        result.update(shard_cases(work, work / "stacked", args.chips))
        result["index"] = index_times(work, args.index_files)
    base = result["raw_stacked_unaligned"]
    result["shards_disk_vs_raw_stacked"] = result["shards_disk_1w"] / base
    result["aligned_vs_unaligned_raw_stacked"] = result["raw_stacked_aligned"] / base
    result["aligned_vs_unaligned_geopera"] = (
        result["geopera_stacked_aligned"] / result["geopera_stacked_unaligned"]
    )
    print(json.dumps(result, indent=1) if args.json else _table(result))


def _table(result: dict[str, Any]) -> str:
    rows = [f"{k:40s} {v:10.1f}" for k, v in result.items() if isinstance(v, float)]
    rows += [f"index {k:34s} {v:10.2f} s" for k, v in result["index"].items()]
    rows += [f"tile decode {k:28s} {v:10.1f} ms" for k, v in result["tile_decode_ms"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
