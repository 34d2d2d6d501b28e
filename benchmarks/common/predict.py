"""Rasters, a segmentation model and the report of the dense-prediction benchmarks.

Shared by ``bench_predict``, ``bench_embed``, ``bench_scale`` and the device check.
"""

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from geopera.core.contracts import FinetunedSpec
from geopera.core.contracts.finetuned import FinetuneOptim
from geopera.core.normalisation import BandStats
from geopera.finetune.base import FinetuneTask
from geopera.finetune.segmentation import DenseHead, SegmentationTask
from geopera.predict.tiled import tile_origins


def make_task(args: argparse.Namespace) -> SegmentationTask:
    """A 6-class segmentation task on 3 bands with random weights."""
    torch.manual_seed(0)
    spec = FinetunedSpec(
        task="segmentation",
        model="vit_small_patch16_224",
        model_kwargs={"depth": args.depth, "embed_dim": args.dim, "num_heads": 2},
        in_chans=3,
        bands=["1", "2", "3"],
        data_bands=[0, 1, 2],
        chip_size=args.tile,
        head=DenseHead("upernet", 64),
        classes=[1, 2, 3, 4, 5, 6],
        norm=BandStats.from_dict(
            {"p2": [0.0] * 3, "p98": [1000.0] * 3, "mean": [0.5] * 3, "std": [0.25] * 3}
        ),
        optim=FinetuneOptim(lr=1e-4, weight_decay=0.0),
    )
    return SegmentationTask(spec).eval()


def make_rasters(folder: Path, sizes: list[int]) -> dict[int, Path]:
    """The 1k GeoTIFF and VRT mosaics of it for the larger sizes."""
    base = folder / "r1024.tif"
    data = np.random.default_rng(0).integers(0, 1000, (3, 1024, 1024)).astype(np.uint16)
    profile = {
        "driver": "GTiff",
        "width": 1024,
        "height": 1024,
        "count": 3,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": rasterio.Affine(10, 0, 500000, 0, -10, 4000000),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    with rasterio.open(base, "w", **profile) as dst:
        dst.write(data)
    out = {}
    for size in sizes:
        if size == 1024:
            out[size] = base
            continue
        n = size // 1024
        bands = []
        for b in range(1, 4):
            sources = "".join(
                f"<SimpleSource><SourceFilename relativeToVRT='1'>{base.name}</SourceFilename>"
                f"<SourceBand>{b}</SourceBand>"
                "<SrcRect xOff='0' yOff='0' xSize='1024' ySize='1024'/>"
                f"<DstRect xOff='{j * 1024}' yOff='{i * 1024}' xSize='1024' ySize='1024'/>"
                "</SimpleSource>"
                for i in range(n)
                for j in range(n)
            )
            bands.append(f"<VRTRasterBand dataType='UInt16' band='{b}'>{sources}</VRTRasterBand>")
        with rasterio.open(base) as ds:
            srs = ds.crs.to_wkt()
        vrt = (
            f"<VRTDataset rasterXSize='{size}' rasterYSize='{size}'><SRS>{srs}</SRS>"
            "<GeoTransform>500000, 10, 0, 4000000, 0, -10</GeoTransform>"
            + "".join(bands)
            + "</VRTDataset>"
        )
        out[size] = folder / f"r{size}.vrt"
        out[size].write_text(vrt)
    return out


def add_size_args(
    p: argparse.ArgumentParser, batch_size: int, depth: int, dim: int, forward_batches: int
) -> None:
    """The arguments of the whole-raster benchmarks (raster sizes, model, device, output)."""
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--depth", type=int, default=depth)
    p.add_argument("--dim", type=int, default=dim)
    p.add_argument("--forward-batches", type=int, default=forward_batches)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--pipeline",
        choices=list(PIPELINE),
        default="auto",
        help="reader/writer threads beside the model: on, off, or auto (where they pay)",
    )
    p.add_argument("--json", action="store_true")


#: ``--pipeline`` values -> the commands' ``pipeline`` argument.
PIPELINE = {"auto": None, "on": True, "off": False}


def run_stats(start: float, forward_seconds: float) -> dict[str, float]:
    """Seconds since ``start``, the process's peak memory, and the forward passes' share."""
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak, "forward_share": forward_seconds / seconds}


def report(
    rows: list[dict[str, Any]], as_json: bool, title: str, first: list[tuple[str, str, str]]
) -> None:
    """Print the rows as JSON or as a Markdown table (peak memory relative to the first size).

    Args:
        rows: One dict per size, with ``ratio_vs_forward``, ``forward_share`` and ``peak_mib``.
        as_json: JSON instead of the table.
        title: The line above the table.
        first: The leading columns: (header, key, format).
    """
    for r in rows:
        r["peak_vs_smallest"] = r["peak_mib"] / rows[0]["peak_mib"]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    columns = [
        *first,
        ("ratio", "ratio_vs_forward", "{:.2f}"),
        ("forward share", "forward_share", "{:.2f}"),
        ("peak MiB", "peak_mib", "{:.0f}"),
        ("peak / 1k", "peak_vs_smallest", "{:.2f}"),
    ]
    print(title)
    print("| " + " | ".join(c[0] for c in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt.format(r[key]) for _, key, fmt in columns) + " |")


def forward_rate(
    task: FinetuneTask, batch_size: int, tile: int, device: str, batches: int
) -> float:
    """Tiles per second of the model alone on random full batches (after one warm-up batch).

    Each batch's result is copied to the host, as predict does, which also waits for the GPU.
    """
    x = torch.rand(batch_size, task.spec.in_chans, tile, tile, device=device) * 1000
    with torch.no_grad():
        task.predict_chips({"image": x}).cpu()
        start = time.perf_counter()
        for _ in range(batches):
            task.predict_chips({"image": x}).cpu()
    return batches * batch_size / (time.perf_counter() - start)


def size_row(
    size: int, tile: int, overlap: int, seconds: float, tiles_per_s: float
) -> dict[str, Any]:
    """A predict run on a ``size`` px square raster against the forward-only rate.

    Args:
        size: Raster width and height in pixels.
        tile: Tile size in pixels.
        overlap: Tile overlap in pixels (the stride is ``tile - overlap``).
        seconds: The predict run's time.
        tiles_per_s: The model's forward-only rate.

    Returns:
        tiles, seconds, Mpx/s, forward-only Mpx/s and their ratio.
    """
    tiles = len(tile_origins(0, size, tile, tile - overlap)) ** 2
    forward_seconds = tiles / tiles_per_s
    return {
        "size": size,
        "tiles": tiles,
        "seconds": seconds,
        "mpx_per_s": size * size / 1e6 / seconds,
        "forward_only_mpx_per_s": size * size / 1e6 / forward_seconds,
        "ratio_vs_forward": forward_seconds / seconds,
    }
