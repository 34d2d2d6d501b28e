"""The downstream part: fine-tuning on NAIP chips, then dense prediction on a large raster."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common.paths import REPO
from benchmarks.gpu.common import CHIPS, device_name, workers, write_part


def tiled_raster(source: Path, path: Path, size: int) -> Path:
    """A ``size`` px square GeoTIFF made of copies of one real chip (EPSG:32618, 1 m pixels)."""
    import warnings

    import numpy as np
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.transform import from_origin

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(source) as src:
            chip = src.read()
    reps = -(-size // chip.shape[-1])
    data = np.tile(chip, (1, reps, reps))[:, :size, :size]
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": data.shape[0],
        "dtype": data.dtype.name,
        "crs": "EPSG:32618",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "transform": from_origin(500000.0, 4300000.0, 1.0, 1.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def finetune(args: argparse.Namespace, device: str, out: Path, deadline: float) -> dict[str, Any]:
    """``geopera finetune segmentation`` on the NAIP chips from the eager run's backbone."""
    chips = args.data / CHIPS
    weights = args.work / "pretrain-eager"
    if not (weights / "backbone.pth").is_file():
        weights = Path("vit_small_patch16_224")  # pretrain failed: random init, still a check
    steps = 3 if args.cpu_smoke else 100
    cmd = [
        sys.executable, "-m", "geopera", "finetune", "segmentation",
        "--config", str(REPO / "configs" / "finetune" / "chesapeake_chips.yaml"),
        "--weights", str(weights),
        "--images", str(chips / "*_naip_RGBN.tif"),
        "--labels", str(chips / "*_landcover.tif"),
        "--max-steps", str(steps), "--out", str(out), "--no-progress",
        "--set", f"trainer.precision={'bf16-mixed' if device == 'cuda' else '32-true'}",
        "--set", f"data.num_workers={workers(args)}",
    ]  # fmt: skip
    if args.cpu_smoke:
        cmd += ["--set", "data.batch_size=2", "--set", "data.chip_size=64",
                "--set", "model.decoder=upernet"]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=max(deadline - time.monotonic(), 1)
    )
    print(proc.stdout[-1500:], proc.stderr[-2500:], file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"geopera finetune failed (exit {proc.returncode})")
    row: dict[str, Any] = {
        "steps": steps,
        "seconds": time.perf_counter() - start,
        "weights": str(weights.name),
    }
    metrics = out / "metrics.json"
    if metrics.is_file():
        row["metrics"] = json.loads(metrics.read_text())
    return row


def part_downstream(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """``geopera finetune segmentation`` 100 steps, then predict on a 4096 px raster."""
    import torch

    from benchmarks.common.predict import forward_rate, size_row
    from geopera.finetune.checkpoint import load_finetuned
    from geopera.predict.run import predict_dense

    device = device_name()
    chips = args.data / CHIPS
    batch = 4 if args.cpu_smoke else 32
    size = 512 if args.cpu_smoke else 4096
    out = args.work / "finetune"
    result = {"finetune": finetune(args, device, out, deadline)}
    write_part(args.work, "downstream", result)

    task = load_finetuned(out / "model.ckpt").to(device).eval()
    tile = task.spec.chip_size
    overlap = tile // 4  # predict's default
    raster = tiled_raster(sorted(chips.glob("*_naip_RGBN.tif"))[0], args.work / "big.tif", size)
    tiles_per_s = forward_rate(task, batch, tile, device, batches=2 if args.cpu_smoke else 10)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    predict_dense(
        task,
        [str(raster)],
        args.work / "pred.tif",
        overlap=overlap,
        batch_size=batch,
        device=device,
    )
    row = size_row(size, tile, overlap, time.perf_counter() - t0, tiles_per_s)
    result["predict"] = {
        **row,
        "tile": tile,
        "overlap": overlap,
        "batch": batch,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }
    return result
