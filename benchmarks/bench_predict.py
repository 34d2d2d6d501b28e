"""`geopera predict segmentation` on rasters of 1k, 4k and 16k pixels square: throughput and memory.

The 1k raster is a real-valued GeoTIFF; the larger ones are VRT mosaics of it (4 x 4 and
16 x 16 copies), so reading costs the same per pixel. The model is a segmentation model of the
given architecture with random weights (speed and memory do not depend on training).

For each size, in its own process: first the baseline, the model's forward-only rate on random
full batches of tiles, turned into the time the size's tiles would take with nothing else (no
reading, blending or writing); then the whole `predict_dense` run (reading, tiled forward
passes, blending, writing the COG) and the process's peak memory (ru_maxrss).

Goals: peak memory flat in raster size (within 10 %), throughput >= 80 % of the
forward-only rate. Because this machine drifts by tens of percent over minutes, the table also
gives the *forward share*: the fraction of the predict run's own time spent inside the model's
forward passes (measured in the same run, so immune to drift); 1 - share is the pipeline's
overhead (reading, blending, writing, COG conversion).

Usage: ``python -m benchmarks.bench_predict [--sizes 1024 4096 16384] [--tile 128]
[--overlap 16] [--batch-size 16] [--depth 2] [--dim 64] [--device cpu] [--json]``
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.paths import child_env, module_command
from benchmarks.common.predict import (
    PIPELINE,
    add_size_args,
    forward_rate,
    make_rasters,
    make_task,
    report,
    run_stats,
    size_row,
)
from geopera.predict.run import predict_dense


def child_predict(args: argparse.Namespace, raster: Path, output: Path) -> dict[str, Any]:
    """Forward-only rate, then the whole predict run, in one process."""
    task = make_task(args).to(args.device)
    rate = forward_rate(task, args.batch_size, args.tile, args.device, args.forward_batches)
    inside = [0.0]
    forward = task.predict_chips

    def timed(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t = time.perf_counter()
        out: torch.Tensor = forward(batch)
        inside[0] += time.perf_counter() - t
        return out

    task.predict_chips = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    predict_dense(
        task,
        [str(raster)],
        output,
        overlap=args.overlap,
        batch_size=args.batch_size,
        device=args.device,
        pipeline=PIPELINE[args.pipeline],
    )
    return {**run_stats(start, inside[0]), "tiles_per_s": rate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlap", type=int, default=16)
    add_size_args(p, batch_size=16, depth=2, dim=64, forward_batches=20)
    p.add_argument("--child", choices=["predict"], help=argparse.SUPPRESS)
    p.add_argument("--raster", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "predict":
        print(json.dumps(child_predict(args, args.raster, args.output)))
        return
    common = [
        "--tile",
        str(args.tile),
        "--overlap",
        str(args.overlap),
        "--batch-size",
        str(args.batch_size),
        "--depth",
        str(args.depth),
        "--dim",
        str(args.dim),
        "--device",
        args.device,
        "--forward-batches",
        str(args.forward_batches),
        "--pipeline",
        args.pipeline,
    ]

    def child(*extra: str) -> dict[str, Any]:
        out = subprocess.run(
            [*module_command("benchmarks.bench_predict"), *common, *extra],
            capture_output=True,
            text=True,
            check=True,
            env=child_env(),
        )
        result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        return result

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rasters = make_rasters(Path(tmp), args.sizes)
        for size in args.sizes:
            run = child(
                "--child",
                "predict",
                "--raster",
                str(rasters[size]),
                "--output",
                str(Path(tmp) / f"out{size}.tif"),
            )
            row = size_row(size, args.tile, args.overlap, run["seconds"], run["tiles_per_s"])
            rows.append({**row, "peak_mib": run["peak_mib"], "forward_share": run["forward_share"]})
            (Path(tmp) / f"out{size}.tif").unlink(missing_ok=True)
    title = (
        f"tile {args.tile}, overlap {args.overlap}, batch {args.batch_size}, ViT depth "
        f"{args.depth} dim {args.dim} + UPerNet, device {args.device}, "
        f"pipeline {args.pipeline}"
    )
    report(
        rows,
        args.json,
        title,
        [
            ("size", "size", "{}"),
            ("tiles", "tiles", "{}"),
            ("seconds", "seconds", "{:.1f}"),
            ("Mpx/s", "mpx_per_s", "{:.2f}"),
            ("forward-only Mpx/s", "forward_only_mpx_per_s", "{:.2f}"),
        ],
    )


if __name__ == "__main__":
    main()
