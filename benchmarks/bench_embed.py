"""`geopera embed` on rasters of 1k, 4k and 16k pixels square: throughput and memory.

The rasters are those of ``bench_predict.py`` (a 1k GeoTIFF and VRT mosaics of it). The backbone
is a randomly initialised ViT of the given width and depth with 16 px tokens (speed and memory
do not depend on training); ``--depth 12 --dim 384`` is ViT-S/16.

For each size, in its own process: first the baseline, the backbone's forward-only rate on
random full batches of chips, turned into the time the size's chips would take with nothing
else; then the whole ``embed`` run (reads, forward passes, chip rows saved, COG with overviews
and GeoParquet written) and the process's peak memory (ru_maxrss). The *forward share* is the
fraction of the run's own time spent in forward passes (measured in the same run, so immune to
the machine's drift).

Goals: throughput >= 90 % of the forward-only rate; peak memory flat within 10 %
from 1k to 16k.

Usage: ``python -m benchmarks.bench_embed [--sizes 1024 4096 16384] [--chip 224]
[--batch-size 8] [--depth 12] [--dim 384] [--device cpu] [--json]``
"""

import argparse
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.backbones import write_backbone
from benchmarks.common.paths import child_env, module_command
from benchmarks.common.predict import PIPELINE, add_size_args, make_rasters, report, run_stats
from geopera.embed.backbone import Embedder
from geopera.embed.run import embed


def child_embed(args: argparse.Namespace, raster: Path, weights: Path, out: Path) -> dict[str, Any]:
    """Forward-only rate, then the whole embed run, in one process."""
    inside = [0.0]
    original = Embedder.tokens

    def timed(self: Embedder, raw: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        result: torch.Tensor = original(self, raw)
        inside[0] += time.perf_counter() - t
        return result

    # the forward-only rate: the same embedder class, random full batches, after a warm-up
    from geopera.embed.backbone import load_embedder

    embedder, _ = load_embedder(str(weights), str(raster), args.chip, torch.device(args.device))
    x = torch.rand(args.batch_size, 3, args.chip, args.chip) * 1000
    embedder.tokens(x)
    start = time.perf_counter()
    for _ in range(args.forward_batches):
        embedder.tokens(x)
    rate = args.forward_batches * args.batch_size / (time.perf_counter() - start)
    del embedder
    Embedder.tokens = timed  # type: ignore[method-assign]
    start = time.perf_counter()
    embed(
        [str(raster)],
        out,
        weights=str(weights),
        chip_size=args.chip,
        level="both",
        batch_size=args.batch_size,
        device=args.device,
        pipeline=PIPELINE[args.pipeline],
    )
    return {**run_stats(start, inside[0]), "chips_per_s": rate}


def _row(size: int, chip: int, result: dict[str, Any]) -> dict[str, Any]:
    """The table row of one size, from what its child process measured."""
    chips = math.ceil(size // 16 / (chip // 16)) ** 2
    forward_seconds = chips / result["chips_per_s"]
    return {
        "size": size,
        "chips": chips,
        "seconds": result["seconds"],
        "chips_per_s": chips / result["seconds"],
        "forward_only_chips_per_s": result["chips_per_s"],
        "ratio_vs_forward": forward_seconds / result["seconds"],
        "forward_share": result["forward_share"],
        "peak_mib": result["peak_mib"],
    }


def main() -> None:
    """Embed each size in a child process and print the table (or JSON)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chip", type=int, default=224)
    add_size_args(p, batch_size=8, depth=12, dim=384, forward_batches=5)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--raster", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child_embed(args, args.raster, args.weights, args.output)))
        return
    common = [
        "--chip", str(args.chip), "--batch-size", str(args.batch_size), "--depth", str(args.depth),
        "--dim", str(args.dim), "--device", args.device, "--forward-batches",
        str(args.forward_batches), "--pipeline", args.pipeline,
    ]  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rasters = make_rasters(Path(tmp), args.sizes)
        weights = write_backbone(Path(tmp), args)
        for size in args.sizes:
            out = Path(tmp) / f"emb{size}"
            run = subprocess.run(
                [
                    *module_command("benchmarks.bench_embed"),
                    *common,
                    "--child",
                    "--raster",
                    str(rasters[size]),
                    "--weights",
                    str(weights),
                    "--output",
                    str(out),
                ],
                capture_output=True,
                text=True,
                check=False,
                env=child_env(),
            )
            if run.returncode != 0:
                raise SystemExit(f"size {size} failed:\n{run.stderr[-3000:]}")
            rows.append(_row(size, args.chip, json.loads(run.stdout.strip().splitlines()[-1])))
    title = (
        f"chip {args.chip}, batch {args.batch_size}, ViT/16 depth {args.depth} dim "
        f"{args.dim}, device {args.device}, pipeline {args.pipeline}, float16 patch COG + "
        "chip GeoParquet"
    )
    report(
        rows,
        args.json,
        title,
        [
            ("size", "size", "{}"),
            ("chips", "chips", "{}"),
            ("seconds", "seconds", "{:.1f}"),
            ("chips/s", "chips_per_s", "{:.1f}"),
            ("forward-only chips/s", "forward_only_chips_per_s", "{:.1f}"),
        ],
    )


if __name__ == "__main__":
    main()
