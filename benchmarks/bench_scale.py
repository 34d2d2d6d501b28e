"""`geopera embed` and `geopera predict` on one process against two: speed-up and merge share.

For each task and raster size, in this run: the command with `devices=1` (the baseline), then
with `devices=2` (two processes over gloo on the CPU, NCCL on GPUs). The table gives both wall
times, the speed-up (1-process time / 2-process time), and the share of the 2-process run that
rank 0 spent putting the ranks' pieces together (merge share; the goal is <= 5 % at 8k px).
One process writes its outputs too: *finish* is the time the one-process run spent writing after
its last forward pass, and *added* the share of the 2-process run that merging costs beyond it.
Predict runs both with the same `band_width` (the unit the ranks share).

On a 2-core machine the two processes share the cores that one process already uses (torch
runs its operators on both), so the speed-up is bounded near 1; what this table shows there is
the overhead of splitting (process start, distributed set-up, each rank loading the model) and
of merging. Rasters are the real-valued mosaics of `bench_predict.py`.

Usage: ``python -m benchmarks.bench_scale [--sizes 2048 8192] [--tile 128] [--depth 2]
[--dim 64] [--device cpu] [--json]``
"""

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common.backbones import write_backbone
from benchmarks.common.predict import make_rasters, make_task
from geopera.embed.run import embed
from geopera.predict.run import predict_dense


def _checkpoint(task: Any, path: Path) -> Path:
    """The task as a `geopera finetune` checkpoint (its spec and weights), as each rank loads it."""
    spec = task.spec.to_dict()
    torch.save({"hyper_parameters": {"spec": spec}, "state_dict": task.state_dict()}, path)
    return path


def _embed(args: argparse.Namespace, raster: Path, weights: Path, out: Path, n: int) -> Any:
    return embed(
        [str(raster)], out, weights=str(weights), level="both", chip_size=args.tile,
        device=args.device, devices=n,
    )  # fmt: skip


def _predict(args: argparse.Namespace, raster: Path, model: Path, out: Path, n: int) -> Any:
    return predict_dense(
        str(model), [str(raster)], out, device=args.device, devices=n, band_width=1024
    )


def _row(task: str, size: int, run: Any, folder: Path) -> dict[str, Any]:
    """Wall times of 1 and 2 processes for one task and size."""
    times, merges = {}, {}
    for n in (1, 2):
        start = time.perf_counter()
        summary = run(folder / f"{task}-{size}-{n}" / ("out.tif" if task == "predict" else ""), n)
        times[n] = time.perf_counter() - start
        merges[n] = summary.merge_seconds
    merge = merges[2]
    return {
        "task": task,
        "size": size,
        "one_s": round(times[1], 2),
        "two_s": round(times[2], 2),
        "speedup": round(times[1] / times[2], 3),
        "merge_s": round(merge, 2),
        "merge_share": round(merge / times[2], 4),
        "finish_s": round(merges[1], 2),
        "added_share": round((merge - merges[1]) / times[2], 4),
    }


def main() -> None:
    """Measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rasters = make_rasters(folder, args.sizes)
        (folder / "backbone").mkdir()
        sizes = argparse.Namespace(**vars(args), chip=args.tile)
        weights = write_backbone(folder / "backbone", sizes)
        model = _checkpoint(make_task(args), folder / "model.ckpt")
        for size in args.sizes:
            raster = rasters[size]
            run_embed = functools.partial(_embed, args, raster, weights)
            run_predict = functools.partial(_predict, args, raster, model)
            rows.append(_row("embed", size, run_embed, folder))
            rows.append(_row("predict", size, run_predict, folder))
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"torch {torch.__version__}, device {args.device}, tile {args.tile}")
    print(
        "| task | size | 1 process (s) | 2 processes (s) | speed-up | merge (s) | merge share "
        "| 1-process finish (s) | added share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['task']} | {r['size']} | {r['one_s']} | {r['two_s']} | {r['speedup']} | "
            f"{r['merge_s']} | {r['merge_share']:.1%} | {r['finish_s']} | {r['added_share']:.1%} |"
        )


if __name__ == "__main__":
    main()
